import time

from mhtest import Test


class TimeoutTest(Test):
    """A test longer than its timeout is killed: INTERRUPT.

    :mhtest: tags=slow
    """

    timeout = 1

    def test(self):
        time.sleep(float(self.params.get("sleep_length", default=30)))
