from mhtest import Test


class WarnTest(Test):
    """A test that logs a warning passes with WARN.

    :mhtest: tags=fast
    """

    def test(self):
        self.log.warning("the disk is almost full")
