import shutil

from mhtest import Test


class CancelTest(Test):
    """A test that learns at run time it cannot run here: CANCEL.

    :mhtest: tags=fast
    """

    def test(self):
        if shutil.which("a-tool-nobody-has") is None:
            self.cancel("a-tool-nobody-has is not installed")
