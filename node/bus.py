"""The bus: an XSUB/XPUB forwarder every node connects to.

Publishers connect to its input, subscribers to its output, so a node needs one address to reach
every topic and the topic tools can see the whole graph. Subscriptions travel upstream, so a
publisher only sends what someone wants, and a latched one hears each new subscriber. The
forwarding runs in libzmq (no Python per message).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import zmq

from node.params import param
from node.runtime import Node
from streams.endpoints import CurveKeys, EndpointError, ipc_in_use, prepare


@dataclass
class BusParams:
    depth: int = param(100, "messages queued per connected peer before the bus drops (per direction)")
    server_keys: str = param("", "folder with server.key_secret: required to bind beyond loopback")


class BusNode(Node):
    kind = "bus"
    Params = BusParams

    def on_configure(self) -> None:
        for endpoint in (self.pub_endpoint, self.sub_endpoint):
            if ipc_in_use(endpoint):
                raise EndpointError(f"a bus already runs at {endpoint}; stop it or choose another --bus")
        keys = CurveKeys.load(self.params.server_keys, server=True) if self.params.server_keys else None
        self._xsub = self.ctx.socket(zmq.XSUB)
        self._xpub = self.ctx.socket(zmq.XPUB)
        for sock in (self._xsub, self._xpub):
            sock.setsockopt(zmq.SNDHWM, self.params.depth)
            sock.setsockopt(zmq.RCVHWM, self.params.depth)
            sock.setsockopt(zmq.LINGER, 0)
        # Every subscription goes upstream, not just a topic's first: a latched publisher answers
        # each new subscriber with its last message.
        self._xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        prepare(self._xsub, self.pub_endpoint, bind=True, curve=keys)
        prepare(self._xpub, self.sub_endpoint, bind=True, curve=keys)
        self._control = self.ctx.socket(zmq.PAIR)
        self._control.bind(f"inproc://bus-control-{id(self)}")
        self.log.info("bus up: publishers → %s, subscribers → %s", self.pub_endpoint, self.sub_endpoint)

    def on_activate(self) -> None:
        peer = self.ctx.socket(zmq.PAIR)
        peer.connect(f"inproc://bus-control-{id(self)}")
        self._thread = threading.Thread(target=self._forward, args=(peer,), daemon=True, name="bus")
        self._thread.start()

    def _forward(self, control: zmq.Socket) -> None:
        try:
            zmq.proxy_steerable(self._xsub, self._xpub, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            control.close(linger=0)

    def on_deactivate(self) -> None:
        self._control.send(b"TERMINATE")
        self._thread.join(timeout=2.0)
