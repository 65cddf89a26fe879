"""The memory of this machine, for the checks that refuse work that could
never fit in it. TensorFlow-free.
"""

import os


def physical_memory():
    """This machine's memory in bytes."""
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
