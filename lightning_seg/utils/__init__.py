"""Utilities every layer may use: files written atomically, reachability of a server, the random generators'
states, the argmax every decision takes. They import nothing of lightning_seg but :mod:`lightning_seg.errors`."""
