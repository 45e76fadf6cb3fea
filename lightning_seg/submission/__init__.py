"""Writing predictions in a competition's submission format: run-length encoding (:mod:`.rle`)."""

from lightning_seg.submission.rle import decode, decode_class_planes, encode, encode_class_planes

__all__ = ["decode", "decode_class_planes", "encode", "encode_class_planes"]
