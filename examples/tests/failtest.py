from mhtest import Test


class FailTest(Test):
    """A test that finds a problem: FAIL, with the reason on the console.

    :mhtest: tags=fast,failing
    """

    def test(self):
        self.fail("this test is supposed to fail")
