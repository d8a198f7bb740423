"""The specification that the hardware generators and the golden model share (NumPy only).

Everything both sides must agree on lives here, once: the TLMM code table and buffer order
(:mod:`.codes`), tilings (:mod:`.tiling`), the model configuration (:mod:`.config`) and the
public checkpoints' shapes (:mod:`.models`), stream formats, rounding and function tables
(:mod:`.numerics`), TLMM widths (:mod:`.tlmm`), attention constants and call plans
(:mod:`.attention`), the KV-cache layout (:mod:`.kv_layout`) and the target table
(:mod:`.targets`). Nothing here imports amaranth, cocotb or torch: it runs on the board.
"""
