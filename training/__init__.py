"""Training: the run behind train.py (`run`), its step (`step`), learning-rate
schedules (`schedules`), the collapse watch (`collapse`), memory checks
(`memory`), distribution (`distributed`), validation during training
(`validation`) and the detailed logs (`detailed_logs`).
"""
