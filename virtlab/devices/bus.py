"""The port-I/O bus: which device answers which port."""


class PortBus:
    def __init__(self):
        self._read = {}
        self._write = {}

    def attach(self, device, ports):
        for p in ports:
            self._read[p] = device.io_read
            self._write[p] = device.io_write

    def read(self, port, size):
        handler = self._read.get(port)
        if handler is None:
            return (1 << (8 * size)) - 1       # nothing there: the bus floats high
        return handler(port, size)

    def write(self, port, size, value):
        handler = self._write.get(port)
        if handler is not None:
            handler(port, size, value)
