"""Tracking front-end: monocular visual odometry with bundle adjustment, RGB-D odometry."""
