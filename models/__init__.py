"""Models: assembling a net and a head and restoring checkpoints (`build`),
embedding with a trained experiment (`inference`), the zoo of imported PyTorch
models (`zoo`) and the readers of their weights (`torch_weights`) and of TF1
checkpoints (`tf1_checkpoint`).
"""
