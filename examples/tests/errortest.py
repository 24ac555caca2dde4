from mhtest import Test


class ErrorTest(Test):
    """A test that cannot do its job: ERROR.

    :mhtest: tags=fast,failing
    """

    def test(self):
        self.error("this test is supposed to error")


class CrashTest(Test):
    """An unexpected exception is ERROR too; tearDown still runs.

    :mhtest: tags=fast,failing
    """

    def test(self):
        raise RuntimeError("unexpected")

    def tearDown(self):
        self.log.info("tearDown ran after the crash")


class SetUpErrorTest(Test):
    """An exception in setUp is ERROR and the test method does not run.

    :mhtest: tags=fast,failing
    """

    def setUp(self):
        raise OSError("no disk to test")

    def test(self):
        self.fail("never reached")
