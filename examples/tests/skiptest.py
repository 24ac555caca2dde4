import sys

from mhtest import Test, skip, skipIf, skipUnless


class SkipTest(Test):
    """Skip decorators: neither setUp nor tearDown runs for a skipped test.

    :mhtest: tags=fast
    """

    def setUp(self):
        raise AssertionError("setUp must not run for a skipped test")

    @skip("not ready yet")
    def test_skip(self):
        pass

    @skipIf(sys.platform.startswith("linux"), "not on Linux")
    def test_skip_if(self):
        pass

    @skipUnless(sys.platform == "plan9", "needs Plan 9")
    def test_skip_unless(self):
        pass
