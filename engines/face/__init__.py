"""Per-face geometry: MediaPipe face mesh, mouth-ROI alignment, lip features, smoothing, contact sheets."""
