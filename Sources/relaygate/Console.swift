import Glibc

/// Unbuffered writes to stdout and stderr by descriptor (the C `FILE*` globals are not concurrency-safe).
enum Console {
    static func err(_ s: String) { put(2, Array(s.utf8)) }
    static func out(_ bytes: some Collection<UInt8>) { put(1, Array(bytes)) }

    static func put(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
            if n <= 0 { if errno == EINTR { continue }; return }
            off += n
        }
    }
}
