"""Studies behind the design decisions (accuracy of numerics variants, KV formats and traffic,
the one-pass softmax): ``tellme study ...``. Not needed at run time."""
