import os

# Set before any test imports the code location: the tests' calls are on fixed dates, and
# the default first partition (90 days before today) would roll past them.
os.environ["CALLTEXTS_PARTITIONS_START"] = "2025-01-01"  # support.child_run.TEST_PARTITIONS_START
