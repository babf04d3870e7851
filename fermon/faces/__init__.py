"""Stage 3, faces: sampled frames in, aligned face crops and tracks out.

- :mod:`~fermon.faces.protocol` (what a detector is) and :mod:`~fermon.faces.detector` (the
  registry: CenterFace, SCRFD), with :mod:`~fermon.faces.centerface`, :mod:`~fermon.faces.scrfd`,
  :mod:`~fermon.faces.runtime` (ONNX Runtime),
  :mod:`~fermon.faces.geometry` (boxes, NMS), :mod:`~fermon.faces.regions` (where to search) and
  :mod:`~fermon.faces.parallel` (detection on several threads);
- :mod:`~fermon.faces.align`: the crop templates, and crops warped to one from the five landmarks;
- :mod:`~fermon.faces.track`: detections linked sample to sample into tracks.
"""
