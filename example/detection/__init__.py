"""The CenterNet (DLA-34, no DCN) detection example: preprocess -> network -> postprocess."""
