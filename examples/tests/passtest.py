from mhtest import Test


class PassTest(Test):
    """The simplest test: it passes.

    :mhtest: tags=fast,example
    """

    def test(self):
        self.log.info("nothing to see here")
