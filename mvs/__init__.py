"""Deep multi-view stereo and SLAM fusion: a video of a room in, a metric 3D model out."""
