"""Attention: exact two-pass softmax engine shared by decode and prefill (docs/hw/attention.md)."""
