import base64

from mhtest import Test


class WhiteBoard(Test):
    """Writes data for the job's consumers on the whiteboard.

    :mhtest: tags=fast
    """

    def test(self):
        data = self.params.get("whiteboard_data_text", default="mhtest whiteboard")
        iterations = int(self.params.get("whiteboard_writes", default=1))
        self.whiteboard = base64.b64encode((data * iterations).encode()).decode()
