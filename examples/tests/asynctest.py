import asyncio

from mhtest import Test


class AsyncTest(Test):
    """Test methods may be coroutines; the runner awaits them.

    :mhtest: tags=fast
    """

    async def test(self):
        await asyncio.sleep(0.01)
        self.whiteboard = "awaited"
