"""What the detection tests' served repository is made of (tests/detection/conftest.py builds it):
input 256 keeps CI fast; one test converts at the default 512."""

INPUT_SIZE = 256
OPENCV_PREPROCESS = "detection-preprocess-opencv"
