"""Dataset readers used by the decode stage. Importing this package stays cheap (no torch)."""

# The source decides the modality; the Snakefile reads this to pick pretrain.image/video.
SOURCE_MODALITY = {"sklearn_digits": "image", "ucf101": "video"}
