"""tellme.quant: checkpoint readers, BitNet quantisation, the weight-file format, the trainer.

``config``, ``codes``, ``model`` and ``format`` use NumPy only: they run on the board.
"""
