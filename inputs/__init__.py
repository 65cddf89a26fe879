"""Data and input: decoding and resizing images (`images`), the P×K training
sampler (`sampler`), detection files and frames of footage (`footage`), and the
HDF5 embeddings format (`embeddings_file`).
"""
