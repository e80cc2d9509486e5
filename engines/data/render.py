"""A talking face from one photo: the photo's face mesh, its mouth re-shaped per viseme frame.

Per photo (`FaceModel.from_photo`, done once, ~0.1 s): MediaPipe's mesh of the photo (static mode); a
similarity transform that places the face as GRID frames show it (outer eye corners level, EYE_DISTANCE
of the frame width apart, their midpoint at EYE_CENTRE) on a canvas a MARGIN larger than the frame on
every side, so head motion reveals photo, not border (where the canvas reaches past the photo, the
photo's edge colours are smeared out); the photo's own mouth opening inpainted with lip colours; a
triangle mesh over the 468 points (MediaPipe's tessellation, strips that close the mouth and eye holes,
a band out to a ring around the face that stays fixed, so the warp fades out); and the displacement of
every vertex per unit of each deformation basis.

Bases (handle vertices are moved as below, in inter-ocular distances (IOD: outer eye corners); every
other vertex follows by harmonic interpolation over the mesh graph; the face above the nose, the ring,
and for the lip bases the jaw line, stay still):
    close            the photo's own lip gap shut (lower lip up 60 %, upper lip down 40 %, the jaw
                     along), and a smile calmed (corners drawn in towards a neutral width and down):
                     every frame starts from a relaxed, closed mouth whatever the photo showed
    jaw_open         lower lip down (fully in the middle, half at the corners), chin and jaw line down
                     by their depth in front of the jaw joint (a rotation, seen from the front)
    lip_spread       corners out and up;  rounding: corners in, lips fuller;  protrusion: lips everted
    upper_lip_raise  upper lip up off the teeth
    blink            upper eyelids down onto the lower ones

Per frame: the vertices move by the weighted bases (RenderParams sets the scale of each); the displaced
triangles of the moving region are rasterised into a label map (a few hundred cv2.fillConvexPoly calls,
later triangles over earlier ones, so the skin covers the mouth strip where the mesh overlaps itself),
and each pixel takes the exact affine map of its triangle back onto the photo: a piecewise-affine warp,
applied with one cv2.remap. (A per-pixel basis field precomputed on the photo would need inverting per
frame, which tears where the lips part and where corners fold.) The mouth cavity is then painted inside
the displaced inner-lip contour: dark, darkest at the back, a tongue low in it, the upper teeth (fixed to
the skull) and lower teeth (moving with the jaw) where the lips uncover them, soft edges, a faint seam
when closed. Then a smooth random head motion (similarity, plus a per-clip pose), lighting (gain,
colour balance, a side-light ramp, slow drift), lens blur and sensor noise. Compression is left to the
video encoder.

Output: (n, H, W, 3) uint8 BGR, one frame per viseme row; 360x288 at 25 fps by default, like GRID.
Deterministic given the rng. A few ms per frame on one core (bench/render.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL, FACEMESH_TESSELATION

from engines.data.visemes import VISEME_PARAMS
from engines.face.mesh import LIPS_INNER, LIPS_OUTER, FaceMesh, to_rgb
from engines.params import param

DEFAULT_SIZE = (360, 288)
EYE_DISTANCE = 0.2  # outer-eye-corner distance / frame width (GRID: 66-80 px of 360)
EYE_CENTRE = (0.5, 0.52)  # eye midpoint / frame size (GRID: about (0.47-0.53, 0.49-0.57))
MARGIN = 0.1  # canvas margin on each side / frame width
RING = 0.55  # the anchored ring lies this far out from the face oval, relative to its centre distance
N_MESH = 468  # the mesh points (the 10 iris points stay out of the warp)
_KERNEL = np.ones((3, 3), np.uint8)

# Lip contours (engines.face.mesh order: corner at the image left, upper lip, corner, lower lip back).
UPPER_INNER, LOWER_INNER = LIPS_INNER[1:10], LIPS_INNER[11:]
UPPER_OUTER, LOWER_OUTER = LIPS_OUTER[1:10], LIPS_OUTER[11:]
CORNERS = (LIPS_OUTER[0], LIPS_OUTER[10], LIPS_INNER[0], LIPS_INNER[10])
# Eyelids from corner to corner: (corner, upper lid..., corner), (lower lid...). Subject's right eye
# (image left) first.
EYES = (((33, 133), (246, 161, 160, 159, 158, 157, 173), (7, 163, 144, 145, 153, 154, 155)),
        ((263, 362), (466, 388, 387, 386, 385, 384, 398), (249, 390, 373, 374, 380, 381, 382)))
FACE_SIDES = (234, 454)  # face edge at ear level: the depth of the jaw joint
SUBNASALE = 2  # everything above the bottom of the nose is held still by the mouth bases
CLOSE_SPLIT = 0.6  # share of the photo's lip gap closed by raising the lower lip (the rest lowers the upper)
NEUTRAL_WIDTH = 0.56  # IOD: a relaxed mouth's corner distance (GRID speakers: 0.51-0.54 median)
NEUTRAL_PULL = 0.6  # share of a wider (smiling) photo mouth's extra width taken away
SMILE_FLATTEN = 0.5  # share of the photo's corner lift taken away
# Mouth colours for mid-grey skin (FaceModel.skin scales them to the face's brightness).
CAVITY_BGR = np.array([30.0, 24.0, 52.0])
TONGUE_BGR = np.array([70.0, 72.0, 150.0])
TEETH_BGR = np.array([160.0, 172.0, 186.0])
NOISE_PAD = 64
# The RenderParams field that sizes each of VISEME_PARAMS in the face (IOD at 1), in their order.
SWINGS = ("max_gap", "spread", "rounding", "protrusion", "lip_raise")


@dataclass
class RenderParams:
    """Rendering settings; lengths are in inter-ocular distances (IOD: outer eye corners) unless noted."""
    fps: float = param(25.0, "frame rate of the viseme track; blinks and motion are timed by it")
    max_gap: float = param(0.31, "inner-lip gap at jaw_open = 1, IOD")
    spread: float = param(0.04, "outward shift of each mouth corner at lip_spread = 1, IOD")
    rounding: float = param(0.06, "inward shift of each mouth corner at rounding = 1, IOD")
    protrusion: float = param(0.035, "lip eversion at protrusion = 1, IOD")
    lip_raise: float = param(0.05, "upper-lip lift at upper_lip_raise = 1, IOD")
    articulation: float = param(0.15, "per-clip random scale of every mouth movement: 1 ± this")
    pose_scale: float = param(0.08, "per-clip random face size: 1 ± this")
    pose_shift: float = param(0.12, "per-clip random face position: ± this, IOD")
    head_shift: float = param(0.03, "head translation, std in IOD (smooth, a few tenths of a Hz)")
    head_rotate_deg: float = param(1.5, "head roll, std in degrees")
    head_scale: float = param(0.012, "head distance change, std (relative size)")
    head_hz: float = param(0.35, "typical frequency of head motion, Hz")
    blink_min_s: float = param(2.0, "shortest time between blinks, seconds (uniform up to blink_max_s)")
    blink_max_s: float = param(6.0, "longest time between blinks, seconds")
    blink_s: float = param(0.25, "blink duration (close, hold, open), seconds")
    brightness: float = param(0.15, "per-clip brightness gain: 1 ± this")
    colour: float = param(0.05, "per-clip gain of each colour channel: 1 ± this")
    side_light: float = param(0.2, "per-clip strength of a linear light ramp across the frame (0..this)")
    light_drift: float = param(0.03, "slow brightness drift within a clip, amplitude")
    blur: float = param(0.8, "lens blur: gaussian sigma in pixels, per clip uniform in [0.2, this]")
    noise: float = param(2.5, "sensor noise std in grey levels, per clip uniform in [0.3, 1] × this")


@dataclass
class _Region:
    """A rectangle of the canvas that some bases move, and the mesh triangles inside it."""
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 on the canvas
    triangles: np.ndarray  # (m, 3) vertex indices, drawn in this order (later ones win where they overlap)
    bases: slice  # which rows of FaceModel.vertex_basis move it
    xy: np.ndarray  # (h, w, 3) float32: canvas x, y of each pixel and 1 (affine maps apply to it directly)


@dataclass
class FaceModel:
    """Everything `render_clip` needs from one photo, computed once (module docstring)."""
    canvas: np.ndarray  # (H + 2m, W + 2m, 3) uint8 BGR: the placed photo
    size: tuple[int, int]  # output W, H
    margin: int
    landmarks: np.ndarray  # (478, 3) float32 canvas pixels (x, y, depth) of the photo's mesh
    iod: float  # outer-eye-corner distance, canvas pixels
    vertices: np.ndarray  # (N, 2) float64 canvas pixels: the 468 mesh points, then the anchored ring
    vertex_basis: np.ndarray  # (7, N, 2) float32 pixels per unit: close, the 5 visemes, blink
    mouth: _Region  # close + visemes
    eyes: _Region  # blink
    closed_line: np.ndarray  # (2, k) x and y of the closed lips' meeting line, x ascending
    skin: float  # brightness of the cheeks relative to mid-grey (scales teeth and cavity colours)

    @classmethod
    def from_photo(cls, photo: str | Path | np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> FaceModel:
        """Model of the largest face in `photo` (a path, or a BGR, BGRA or grayscale uint8 image);
        ValueError if it cannot be read or shows no face."""
        if isinstance(photo, str | Path):
            image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"cannot read image {photo}")
        else:
            image = cv2.cvtColor(to_rgb(photo), cv2.COLOR_RGB2BGR)
        with FaceMesh(max_faces=4, static=True) as mesh:
            faces = mesh.detect(image)
        if not faces:
            raise ValueError(f"no face found in {photo if isinstance(photo, str | Path) else 'the image'}")
        face = max(faces, key=lambda f: f.bbox[2] * f.bbox[3])
        return _build(image, face.landmarks, size)


# --- geometry (once per photo) ------------------------------------------------------------------------

@cache
def _mesh_triangles() -> np.ndarray:
    """MediaPipe's tessellation as triangles (the 3-cliques of its edge graph)."""
    neighbours: dict[int, set[int]] = defaultdict(set)
    for a, b in FACEMESH_TESSELATION:
        neighbours[a].add(b)
        neighbours[b].add(a)
    triangles = {tuple(sorted((a, b, c)))
                 for a, b in FACEMESH_TESSELATION for c in neighbours[a] & neighbours[b]}
    return np.array(sorted(triangles), np.int32)


@cache
def _oval_loop() -> tuple[int, ...]:
    """The face-oval points in order around the face."""
    nxt: dict[int, list[int]] = defaultdict(list)
    for a, b in FACEMESH_FACE_OVAL:
        nxt[a].append(b)
        nxt[b].append(a)
    loop = [10]
    while len(loop) < len(nxt):
        loop.append(next(p for p in nxt[loop[-1]] if p not in loop))
    return tuple(loop)


def _strip(upper: tuple[int, ...], lower: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Triangles between two chains with shared end points."""
    out = []
    for i in range(len(upper) - 1):
        for tri in ((upper[i], upper[i + 1], lower[i]), (upper[i + 1], lower[i + 1], lower[i])):
            if len(set(tri)) == 3:
                out.append(tri)
    return out


def _triangles(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All vertices (mesh points, then the ring) and triangles: the mouth and eye strips first (where
    the displaced mesh overlaps itself, the skin drawn later covers them), the tessellation, the band."""
    oval = _oval_loop()
    centre = points[list(oval)].mean(axis=0)
    ring = points[list(oval)] + (points[list(oval)] - centre) * RING
    vertices = np.vstack([points[:N_MESH], ring]).astype(np.float64)
    left, right = LIPS_INNER[0], LIPS_INNER[10]
    tris = _strip((left, *UPPER_INNER, right), (left, *LOWER_INNER[::-1], right))
    for (c0, c1), upper, lower in EYES:
        tris += _strip((c0, *upper, c1), (c0, *lower, c1))
    tris += [tuple(t) for t in _mesh_triangles()]
    n = len(oval)
    for k in range(n):
        a, b = oval[k], oval[(k + 1) % n]
        ra, rb = N_MESH + k, N_MESH + (k + 1) % n
        tris += [(a, b, ra), (b, rb, ra)]
    return vertices, np.array(tris, np.int32)


def _laplacian(n: int, triangles: np.ndarray) -> np.ndarray:
    """(n, n) graph Laplacian of the mesh (unit edge weights)."""
    adjacency = np.zeros((n, n))
    for a, b, c in triangles:
        adjacency[[a, b, c], [b, c, a]] = 1.0
        adjacency[[b, c, a], [a, b, c]] = 1.0
    return np.diag(adjacency.sum(axis=1)) - adjacency


def _harmonic(laplacian: np.ndarray, fixed: dict[int, np.ndarray]) -> np.ndarray:
    """(n, 2) values: `fixed` where given, elsewhere the mean of their mesh neighbours (Laplace)."""
    known = np.array(sorted(fixed), np.int64)
    free = np.setdiff1d(np.arange(len(laplacian)), known)
    values = np.zeros((len(laplacian), 2))
    values[known] = np.array([fixed[k] for k in known])
    inner = laplacian[free][:, free]
    rhs = -laplacian[free][:, known] @ values[known]
    connected = np.diag(inner) > 0  # a vertex in no triangle keeps 0
    values[free[connected]] = np.linalg.solve(inner[connected][:, connected], rhs[connected])
    return values


def placement(landmarks: np.ndarray, size: tuple[int, int], margin: int) -> np.ndarray:
    """2x3 similarity from photo pixels to the canvas (module docstring)."""
    width, height = size
    half = EYE_DISTANCE * width / 2
    cx, cy = EYE_CENTRE[0] * width + margin, EYE_CENTRE[1] * height + margin
    src = landmarks[[33, 263], :2].astype(np.float64)
    dst = np.array([[cx - half, cy], [cx + half, cy]])
    (sx, sy), (dx, dy) = src[1] - src[0], dst[1] - dst[0]
    scale = math.hypot(dx, dy) / math.hypot(sx, sy)
    angle = math.atan2(dy, dx) - math.atan2(sy, sx)
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    mid_src = src.mean(axis=0)
    return np.hstack([rot, (dst.mean(axis=0) - rot @ mid_src)[:, None]])


def place_photo(image: np.ndarray, matrix: np.ndarray, canvas_size: tuple[int, int]) -> np.ndarray:
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    if scale < 0.8:  # shrink with area averaging first so the photo does not alias
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        fx, fy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        # canvas <- small pixel: undo the resize (OpenCV maps pixel centres), then the placement
        matrix = matrix @ np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5],
                                    [0, 0, 1]])
        image = small
    canvas = cv2.warpAffine(image, matrix, canvas_size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(np.full(image.shape[:2], 255, np.uint8), matrix, canvas_size,
                            flags=cv2.INTER_LINEAR)
    if inside.min() == 255:
        return canvas
    # Where the canvas reaches past the photo: its edge colours smeared out (replicated edge pixels
    # would streak, a mirrored photo would show a second face), the photo fading into them like an
    # out-of-focus background rather than ending at a visible edge.
    fade = 0.02 * canvas_size[0]
    smear = cv2.GaussianBlur(canvas, (0, 0), 2.5 * fade)
    core = cv2.erode(inside, np.ones((int(4 * fade) | 1,) * 2, np.uint8))
    weight = cv2.GaussianBlur(core, (0, 0), fade)[..., None] / 255.0
    return (canvas * weight + smear * (1 - weight)).astype(np.uint8)


def _curve(points: np.ndarray, at: np.ndarray) -> np.ndarray:
    """y of the polyline `points` (k, 2) at x = `at` (held flat beyond its ends)."""
    order = np.argsort(points[:, 0])
    return np.interp(at, points[order, 0], points[order, 1])


def _mouth_handles(pts: np.ndarray) -> list[dict[int, np.ndarray]]:
    """Handle displacements (IOD units, or pixels for `close`) of close + the five visemes."""
    iod = np.linalg.norm(pts[263, :2] - pts[33, :2])
    left, right = pts[LIPS_OUTER[0], :2], pts[LIPS_OUTER[10], :2]
    cx, half = (left[0] + right[0]) / 2, abs(right[0] - left[0]) / 2
    inner_up = pts[[LIPS_INNER[0], *UPPER_INNER, LIPS_INNER[10]], :2]
    inner_lo = pts[[LIPS_INNER[0], *LOWER_INNER, LIPS_INNER[10]], :2]

    def gap(x: float) -> float:
        return max(float(_curve(inner_lo, np.array([x]))[0] - _curve(inner_up, np.array([x]))[0]), 0.0)

    z_joint, z_lip = pts[list(FACE_SIDES), 2].mean(), pts[LOWER_INNER[4], 2]
    corner_y = (left[1] + right[1]) / 2
    # A smiling photo is calmed towards a neutral mouth: corners drawn in and down (pixels).
    pull = NEUTRAL_PULL * max(2 * half / iod - NEUTRAL_WIDTH, 0.0) / 2 * iod
    middle = (_curve(inner_up, np.array([cx]))[0] + _curve(inner_lo, np.array([cx]))[0]) / 2
    flatten = SMILE_FLATTEN * max(middle - corner_y, 0.0)
    bases: list[dict[int, np.ndarray]] = [{} for _ in range(1 + len(VISEME_PARAMS))]
    close, jaw, spread, rounding, protrude, raise_ = bases
    for k in _oval_loop():
        if pts[k, 1] < corner_y + 0.05 * iod:
            for basis in bases:
                basis[k] = np.zeros(2)
            continue
        depth = float(np.clip((z_joint - pts[k, 2]) / max(z_joint - z_lip, 1e-6), 0.0, 1.1))
        for basis in bases:
            basis[k] = np.zeros(2)
        jaw[k] = np.array([0.0, depth])
        close[k] = np.array([0.0, -CLOSE_SPLIT * gap(cx) * depth])
    for k in range(N_MESH):
        if pts[k, 1] <= pts[SUBNASALE, 1]:
            for basis in bases:
                basis[k] = np.zeros(2)
    for outer, inner, side in ((UPPER_OUTER, UPPER_INNER, -1), (LOWER_OUTER, LOWER_INNER, 1)):
        for k in (*outer, *inner):
            x = float(np.clip((pts[k, 0] - cx) / half, -1, 1))
            bulge = 1 - x * x
            share = CLOSE_SPLIT if side > 0 else CLOSE_SPLIT - 1
            close[k] = np.array([-pull * x, flatten * x * x - share * gap(pts[k, 0])])
            jaw[k] = np.array([0.0, 1 - 0.5 * x * x if side > 0 else 0.45 * x**4])
            spread[k] = np.array([x, -0.25 * x * x])
            is_outer = k in outer
            rounding[k] = np.array([-x, 0.25 * side * bulge if is_outer else 0.0])
            protrude[k] = np.array([-0.3 * x, side * bulge if is_outer else 0.0])
            raise_[k] = np.array([0.0, -(1 - 0.6 * x * x) if side < 0 else 0.0])
    for k in CORNERS:
        s = 1.0 if pts[k, 0] > cx else -1.0
        close[k] = np.array([-pull * s, flatten])
        jaw[k] = np.array([-0.1 * s, 0.45])
        spread[k] = np.array([s, -0.25])
        rounding[k] = np.array([-s, 0.0])
        protrude[k] = np.array([-0.3 * s, 0.0])
        raise_[k] = np.array([0.0, -0.2])
    return bases


def _blink_handles(pts: np.ndarray, iod: float) -> dict[int, np.ndarray]:
    """Pixels: upper lids down onto the lower ones; the eyes' surroundings free, the rest fixed."""
    fixed = {k: np.zeros(2) for k in range(N_MESH)}
    for (c0, c1), upper, lower in EYES:
        chain_lo = pts[[c0, *lower, c1], :2]
        centre = pts[[c0, c1], :2].mean(axis=0)
        for k in range(N_MESH):
            d = (pts[k, :2] - centre) / iod
            if (d[0] / 0.32) ** 2 + (d[1] / (0.22 if d[1] < 0 else 0.12)) ** 2 < 1:
                del fixed[k]
        for k in upper:
            fixed[k] = np.array([0.0, (_curve(chain_lo, pts[[k], 0])[0] - pts[k, 1])])
        for k in lower:
            fixed[k] = np.zeros(2)
        fixed[c0] = fixed[c1] = np.zeros(2)
    return fixed


def _region(vertices: np.ndarray, triangles: np.ndarray, basis: np.ndarray, rows: slice,
            canvas_size: tuple[int, int]) -> _Region:
    """The canvas box that the bases `basis[rows]` can move, with the triangles they move."""
    moving = np.abs(basis[rows]).max(axis=(0, 2)) > 1e-3
    touched = np.isin(triangles, np.nonzero(moving)[0]).any(axis=1)
    corners = vertices[np.unique(triangles[touched])]
    width, height = canvas_size
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int) - 1, 0, None)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 2, (width, height))
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    xy = np.stack([xs, ys, np.ones_like(xs)], axis=-1)
    return _Region((int(x0), int(y0), int(x1), int(y1)), triangles[touched], rows, xy)


def _fill_mouth(canvas: np.ndarray, inner: np.ndarray) -> None:
    """Inpaint the photo's own mouth opening (teeth, dark gaps) with the colours of the lips around it,
    in place: where the warp closes the lips or samples near their inner edges it finds lip, and the
    painted cavity is the only mouth interior a frame shows."""
    height, width = canvas.shape[:2]
    x0, y0 = np.clip(np.floor(inner.min(axis=0)).astype(int) - 6, 0, (width, height))
    x1, y1 = np.clip(np.ceil(inner.max(axis=0)).astype(int) + 7, 0, (width, height))
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((inner - (x0, y0)) * 4).astype(np.int32)], 255, cv2.LINE_8, shift=2)
    mask = cv2.dilate(mask, _KERNEL)
    canvas[y0:y1, x0:x1] = cv2.inpaint(canvas[y0:y1, x0:x1], mask, 3, cv2.INPAINT_TELEA)


def _build(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int]) -> FaceModel:
    width, height = size
    margin = round(MARGIN * width)
    canvas_size = (width + 2 * margin, height + 2 * margin)
    matrix = placement(landmarks, size, margin)
    canvas = place_photo(image, matrix, canvas_size)
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    pts = np.hstack([landmarks[:, :2] @ matrix[:, :2].T + matrix[:, 2], landmarks[:, 2:3] * scale])
    iod = float(np.linalg.norm(pts[263, :2] - pts[33, :2]))
    _fill_mouth(canvas, pts[list(LIPS_INNER), :2])
    vertices, triangles = _triangles(pts[:, :2])
    laplacian = _laplacian(len(vertices), triangles)
    ring = {k: np.zeros(2) for k in range(N_MESH, len(vertices))}
    fields = []
    for k, handles in enumerate(_mouth_handles(pts)):
        unit = 1.0 if k == 0 else iod  # `close` is in pixels already
        fields.append(_harmonic(laplacian, {**ring, **{i: v * unit for i, v in handles.items()}}))
    fields.append(_harmonic(laplacian, {**ring, **_blink_handles(pts, iod)}))
    vertex_basis = np.array(fields, np.float32)
    mouth = _region(vertices, triangles, vertex_basis, slice(0, 1 + len(VISEME_PARAMS)), canvas_size)
    eyes = _region(vertices, triangles, vertex_basis, slice(1 + len(VISEME_PARAMS), None), canvas_size)
    upper = [LIPS_INNER[0], *UPPER_INNER, LIPS_INNER[10]]
    closed = vertices[upper] + vertex_basis[0][upper]
    closed = closed[np.argsort(closed[:, 0])].T.astype(np.float32)
    patches = [canvas[int(y) - 3:int(y) + 4, int(x) - 3:int(x) + 4] for x, y in pts[[50, 280], :2]]  # cheeks
    skin = float(np.mean([cv2.cvtColor(p, cv2.COLOR_BGR2GRAY).mean() for p in patches])) / 128.0
    return FaceModel(canvas, (width, height), margin, pts.astype(np.float32), iod, vertices, vertex_basis,
                     mouth, eyes, closed, float(np.clip(skin, 0.4, 1.6)))


# --- per frame ----------------------------------------------------------------------------------------


@cache
def _noise_bank(height: int, width: int) -> np.ndarray:
    """A fixed field of unit gaussian noise a little larger than the frame; each frame reads it at a
    random offset (drawing fresh noise per frame would cost more than the rest of the rendering)."""
    shape = (height + NOISE_PAD, width + NOISE_PAD, 3)
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _warp(frame: np.ndarray, model: FaceModel, region: _Region, weights: np.ndarray) -> None:
    """Move the pixels of `region` in place: the vertices by the weighted bases, the pixels by the exact
    piecewise-affine map of the displaced triangles back onto the photo's."""
    x0, y0, x1, y1 = region.box
    rest = model.vertices
    moved = rest + np.tensordot(weights, model.vertex_basis[region.bases], axes=1)
    tris = region.triangles
    a, b, c = moved[tris[:, 0]], moved[tris[:, 1]], moved[tris[:, 2]]
    edges = np.stack([b - a, c - a], axis=2)  # (m, 2, 2), columns are the edges
    det = edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]
    keep = np.abs(det) > 0.5  # a sliver (under a quarter pixel) is left to its neighbours
    adjugate = np.stack([np.stack([edges[:, 1, 1], -edges[:, 0, 1]], axis=1),
                         np.stack([-edges[:, 1, 0], edges[:, 0, 0]], axis=1)], axis=1)
    inverse = adjugate / np.where(keep, det, 1.0)[:, None, None]
    ra = rest[tris[:, 0]]
    rest_edges = np.stack([rest[tris[:, 1]] - ra, rest[tris[:, 2]] - ra], axis=2)
    linear = rest_edges @ inverse  # displaced → photo, per triangle
    affine = np.concatenate([linear, (ra - np.einsum("mij,mj->mi", linear, a))[:, :, None]], axis=2)
    table = np.concatenate([affine.reshape(-1, 6), [[1, 0, 0, 0, 1, 0]]]).astype(np.float32)
    labels = np.full((y1 - y0, x1 - x0), len(tris), np.int32)  # the last row of `table` is the identity
    corners = np.round((np.stack([a, b, c], axis=1) - (x0, y0)) * 16).astype(np.int32)
    for i in np.nonzero(keep)[0]:
        cv2.fillConvexPoly(labels, corners[i], int(i), cv2.LINE_8, 4)
    maps = table[labels].reshape(y1 - y0, x1 - x0, 2, 3)
    source = np.einsum("hwij,hwj->hwi", maps, region.xy)
    frame[y0:y1, x0:x1] = cv2.remap(frame, source, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _paint_mouth(frame: np.ndarray, model: FaceModel, weights: np.ndarray) -> None:
    """The cavity, teeth and tongue inside the displaced inner-lip contour, blended in place."""
    inner = list(LIPS_INNER)
    poly = model.landmarks[inner, :2] + np.tensordot(weights, model.vertex_basis[:-1, inner], axes=1)
    lower = slice(11, 20)  # where the closed lips press into each other, the opening is empty, not inverted
    poly[lower, 1] = np.maximum(poly[lower, 1], _curve(poly[:11], poly[lower, 0]))
    height, width = frame.shape[:2]
    x0, y0 = np.clip(np.floor(poly.min(axis=0)).astype(int) - 2, 0, (width - 1, height - 1))
    x1, y1 = np.clip(np.ceil(poly.max(axis=0)).astype(int) + 3, x0 + 1, (width, height))
    xs = np.arange(x0, x1, dtype=np.float64)
    y_up, y_lo = _curve(poly[:11], xs), _curve(poly[[0, *range(19, 9, -1)]], xs)
    gap = float(np.max(y_lo - y_up, initial=0.0))
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((poly - (x0, y0)) * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
    if gap >= 1.0:  # open: grown by a pixel, so the paint also darkens the lips' inner edges
        mask = cv2.dilate(mask, _KERNEL)
    alpha = cv2.GaussianBlur(mask, (3, 3), 0.7).astype(np.float32) / 255.0
    alpha *= min(1.0, 0.5 + 0.5 * gap / 2.0)  # a closed mouth shows a soft seam, not a black line
    cx, half = (poly[0, 0] + poly[10, 0]) / 2, max(abs(poly[10, 0] - poly[0, 0]) / 2, 1.0)
    side = np.clip((xs - cx) / half, -1, 1)[None, :]
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    iod, jaw = model.iod, weights[1] * model.iod
    closed = np.interp(xs, model.closed_line[0], model.closed_line[1])[None, :]
    upper_edge = closed + iod * (0.035 - 0.15 * side**4)  # incisal edges, curving up and back at the sides
    lower_edge = closed + 0.9 * jaw + iod * (0.015 + 0.15 * side**4)
    depth = 0.55 + 0.45 * side**2  # darkest deep in the middle of the mouth
    layer = np.broadcast_to(CAVITY_BGR, (*alpha.shape, 3)) * depth[..., None]
    tongue_top = y_lo[None, :] - 0.35 * max(gap, 1.0)
    tongue = np.clip((ys - tongue_top) / max(0.2 * gap, 1.0), 0, 1) * (1 - side**2)
    layer = layer + (TONGUE_BGR * 0.7 - layer) * (0.7 * tongue)[..., None]
    shade = (1 - 0.75 * side**2) * np.clip(0.5 + 0.5 * (ys - y_up[None, :]) / 2.0, 0.5, 1.0)
    gaps = 1 - 0.1 * np.exp(-np.square((np.abs(side) % 0.17 - 0.085) / 0.02))  # faint lines between teeth
    teeth_up = np.clip(upper_edge - ys + 0.5, 0, 1)
    teeth_lo = np.clip(ys - lower_edge + 0.5, 0, 1) * 0.85
    teeth = np.maximum(teeth_up, teeth_lo)
    layer = layer + (TEETH_BGR * (shade * gaps)[..., None] - layer) * teeth[..., None]
    layer *= model.skin
    patch = frame[y0:y1, x0:x1].astype(np.float32)
    a = alpha[..., None]
    frame[y0:y1, x0:x1] = np.clip(patch + (layer - patch) * a, 0, 255).astype(np.uint8)


def _smooth_motion(rng: np.random.Generator, times: np.ndarray, std: float, hz: float) -> np.ndarray:
    """A smooth random signal with standard deviation `std`: three sinusoids around `hz`."""
    freqs = rng.uniform(0.3, 1.7, 3) * hz
    phases = rng.uniform(0, 2 * np.pi, 3)
    return std * math.sqrt(2 / 3) * np.sin(2 * np.pi * freqs[None, :] * times[:, None] + phases).sum(axis=1)


def _blinks(rng: np.random.Generator, times: np.ndarray, params: RenderParams) -> np.ndarray:
    """Eyelid closure per frame in [0, 1]: quick close, brief hold, slower opening."""
    lo, hi = params.blink_min_s, params.blink_max_s
    closure = np.zeros(len(times))
    start = rng.uniform(0.3, hi)
    end = times[-1] if len(times) else 0.0
    while start <= end:
        p = (times - start) / params.blink_s
        shape = np.where(p < 0.35, 0.5 - 0.5 * np.cos(np.pi * p / 0.35),
                         np.where(p < 0.5, 1.0, 0.5 + 0.5 * np.cos(np.pi * (p - 0.5) / 0.5)))
        closure = np.maximum(closure, np.where((p >= 0) & (p <= 1), shape, 0.0))
        start += rng.uniform(lo, hi)
    return closure


def _motion(model: FaceModel, rng: np.random.Generator, times: np.ndarray,
            params: RenderParams) -> np.ndarray:
    """(n, 2, 3) canvas → frame matrices: the margin, a per-clip pose, and a smooth head motion."""
    n = len(times)
    centre = model.landmarks[[33, 263, 13, 14], :2].mean(axis=0).astype(np.float64)
    pose = 1 + rng.uniform(-1, 1) * params.pose_scale
    scale = pose * (1 + _smooth_motion(rng, times, params.head_scale, params.head_hz))
    angle = np.radians(_smooth_motion(rng, times, params.head_rotate_deg, params.head_hz))
    shift = rng.uniform(-1, 1, 2) * params.pose_shift * model.iod
    tx = shift[0] + _smooth_motion(rng, times, params.head_shift * model.iod, params.head_hz)
    ty = shift[1] + _smooth_motion(rng, times, params.head_shift * model.iod, params.head_hz)
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    matrices = np.empty((n, 2, 3))
    matrices[:, 0, 0], matrices[:, 0, 1] = cos, -sin
    matrices[:, 1, 0], matrices[:, 1, 1] = sin, cos
    matrices[:, 0, 2] = centre[0] - (cos * centre[0] - sin * centre[1]) + tx - model.margin
    matrices[:, 1, 2] = centre[1] - (sin * centre[0] + cos * centre[1]) + ty - model.margin
    return matrices


def _lighting(rng: np.random.Generator, size: tuple[int, int], params: RenderParams) -> np.ndarray:
    """(H, W, 3) float32 per-pixel gain of one clip: brightness, colour balance and a side light."""
    width, height = size
    gains = (1 + rng.uniform(-1, 1) * params.brightness) * (1 + rng.uniform(-1, 1, 3) * params.colour)
    direction = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0, params.side_light)
    x = (np.arange(width, dtype=np.float32) / width - 0.5) * math.cos(direction)
    y = (np.arange(height, dtype=np.float32) / height - 0.5) * math.sin(direction)
    ramp = 1 + strength * (y[:, None] + x[None, :])
    return (ramp[..., None] * gains[None, None, :]).astype(np.float32)


def render_clip(model: FaceModel, visemes: np.ndarray, rng: np.random.Generator,
                params: RenderParams | None = None) -> np.ndarray:
    """Frames (n, H, W, 3) uint8 BGR of `model` speaking the viseme track (n, 5) (module docstring)."""
    params = params or RenderParams()
    if params.fps <= 0 or params.blink_s <= 0 or not 0 < params.blink_min_s <= params.blink_max_s:
        raise ValueError("need fps > 0, blink_s > 0 and 0 < blink_min_s <= blink_max_s")
    track = np.asarray(visemes, np.float32)
    if track.ndim != 2 or track.shape[1] != len(VISEME_PARAMS):
        raise ValueError(f"expected visemes of shape (n, {len(VISEME_PARAMS)}), got {track.shape}")
    if not np.isfinite(track).all():
        raise ValueError("viseme track contains NaN or infinity")
    n = len(track)
    width, height = model.size
    times = np.arange(n) / params.fps
    scales = np.array([getattr(params, name) for name in SWINGS], np.float32) * (
        1 + rng.uniform(-1, 1) * params.articulation)
    matrices = _motion(model, rng, times, params)
    blinks = _blinks(rng, times, params)
    gain = _lighting(rng, model.size, params)
    drift_hz, drift_phase = rng.uniform(0.05, 0.3), rng.uniform(0, 2 * np.pi)
    drift = 1 + params.light_drift * np.sin(2 * np.pi * drift_hz * times + drift_phase)
    sigma = rng.uniform(0.2, max(params.blur, 0.2))
    noise_std = rng.uniform(0.3, 1.0) * params.noise
    offsets = rng.integers(0, NOISE_PAD, (n, 2))
    noise = _noise_bank(height, width)
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        weights = np.concatenate([[1.0], np.clip(track[i], 0, 1) * scales]).astype(np.float32)
        frame = model.canvas.copy()
        _warp(frame, model, model.mouth, weights)
        if blinks[i] > 0:
            _warp(frame, model, model.eyes, np.array([blinks[i]], np.float32))
        _paint_mouth(frame, model, weights)
        image = cv2.warpAffine(frame, matrices[i], (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT101)
        image = cv2.GaussianBlur(image, (0, 0), sigma)
        oy, ox = offsets[i]
        shaded = image.astype(np.float32) * gain * np.float32(drift[i])
        shaded += noise[oy:oy + height, ox:ox + width] * np.float32(noise_std)
        out[i] = np.clip(shaded, 0, 255)
    return out
