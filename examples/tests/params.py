from mhtest import Test


class Params(Test):
    """Reads parameters from -p and --params files; YAML types are kept.

    :mhtest: tags=fast
    """

    def test(self):
        size = self.params.get("size", default=1)
        sizes = self.params.get("sizes", default=[])
        self.log.info("size=%r sizes=%r", size, sizes)
        self.whiteboard = f"size={size!r} sizes={sizes!r}"
        if int(size) < 1:
            self.fail(f"size must be positive, got {size!r}")
