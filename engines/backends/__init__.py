"""Inference backends behind one interface: a GraphSpec (a module, example inputs, named inputs and
outputs, dynamic axes) compiled into a Graph (torch tensors in and out) by TensorRT, ONNX Runtime or
PyTorch, with the fallback chain TensorRT → ONNX Runtime → PyTorch (select.compile_graph). Exported
ONNX files and TensorRT engines are cached (cache) under ~/.cache/voxsight/engines ($VOXSIGHT_CACHE/
engines). onnxruntime and tensorrt are imported only when their backend is used.
"""

from engines.backends.base import BackendError, BackendOptions, Graph, GraphSpec, Profile, derive_profiles
from engines.backends.select import BackendStatus, available_backends, compile_graph

__all__ = [
    "BackendError",
    "BackendOptions",
    "BackendStatus",
    "Graph",
    "GraphSpec",
    "Profile",
    "available_backends",
    "compile_graph",
    "derive_profiles",
]
