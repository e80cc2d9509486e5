from tests.helpers import wait_heartbeat


def test_bus_heartbeats(bus: str) -> None:
    diag = wait_heartbeat(bus, "bus", predicate=lambda d: d.state == "active")
    assert diag.level == "OK"
