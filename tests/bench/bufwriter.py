# io.BufferedWriter for `mpfota bench --peer`: the unix port lacks it (ESP32 firmware has it
# in C), and glenn20's esp32-ota writes through it. Collects writes into blocks of `size`
# and hands the raw stream whole blocks; flush() writes what is left.
class BufferedWriter:
    def __init__(self, raw, size):
        self.raw = raw
        self.mv = memoryview(bytearray(size))
        self.fill = 0

    def write(self, data):
        src = memoryview(data)
        size = len(self.mv)
        done = 0
        while done < len(src):
            k = min(size - self.fill, len(src) - done)
            self.mv[self.fill : self.fill + k] = src[done : done + k]
            self.fill += k
            done += k
            if self.fill == size:
                self.raw.write(self.mv)
                self.fill = 0
        return done

    def flush(self):
        if self.fill:
            self.raw.write(self.mv[: self.fill])
            self.fill = 0
