"""Export: a run's network as ONNX, and a static web page that samples from it in the reader's
browser (onnxruntime-web), with the run's own sampler written once more in JavaScript."""

from .onnx import export_onnx
from .web import embed_snippet, export_web

__all__ = ["embed_snippet", "export_onnx", "export_web"]
