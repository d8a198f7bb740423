"""Studies behind the design decisions (accuracy of numerics variants, KV formats and traffic,
the one-pass softmax, golden-model speed, weight-file sizes): ``tellme study ...``. Not needed
at run time."""
