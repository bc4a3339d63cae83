"""Give a test's subprocess a fake GPU: the real pynvml over tests/fake_nvml_live.py.

Active only with WATTLEDGER_TEST_LIVE_GPU=1 and this directory on PYTHONPATH
(tests/test_gpu_trace_record.py starts the agent that way); otherwise it does nothing.
"""

import os
import sys

if os.environ.get("WATTLEDGER_TEST_LIVE_GPU") == "1":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from tests.fake_nvml_driver import real_pynvml
    from tests.fake_nvml_live import LiveGpuNvml

    _LIVE_GPU = real_pynvml(LiveGpuNvml())
    _LIVE_GPU.__enter__()  # for the life of the process
