"""Evaluation: distances, ranks and the Market-1501 figures (`metrics`),
k-reciprocal re-ranking (`rerank`), the pictures (`visualize`) and the
self-contained HTML report (`html_report`).
"""
