import CShim
import Foundation
import Glibc
import MailModel

public enum QueueError: Error, Sendable, CustomStringConvertible {
    /// ENOSPC or EDQUOT: the client should retry later (452 4.3.1).
    case noSpace(step: String)
    /// Any other failure (451 4.3.0).
    case io(step: String, errno: Int32)

    public var description: String {
        switch self {
        case .noSpace(let step): return "\(step): no space left"
        case .io(let step, let e): return "\(step): \(String(cString: strerror(e)))"
        }
    }
}

/// What start-up recovery found and did.
public struct RecoveryReport: Sendable {
    public var queued = 0
    public var removedTemporary = 0
    public var quarantined: [String] = []
}

/// The spool: `tmp/` for files being written, `queue/` for accepted messages, `quarantine/` for files
/// that cannot be read back (kept, never deleted: they may hold an acknowledged message).
public final class SpoolDirectory: Sendable {
    public let root: String
    let queueFD: Int32
    let tmpFD: Int32

    public static let subdirectories = ["tmp", "queue", "quarantine", "state", "hold"]

    /// Opens (creating when missing) the spool at `root`.
    public init(root: String) throws(QueueError) {
        self.root = root
        for dir in [root] + Self.subdirectories.map({ "\(root)/\($0)" }) {
            if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw .io(step: "mkdir \(dir)", errno: errno) }
        }
        let q = open("\(root)/queue", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard q >= 0 else { throw .io(step: "open queue", errno: errno) }
        let t = open("\(root)/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard t >= 0 else { close(q); throw .io(step: "open tmp", errno: errno) }
        queueFD = q
        tmpFD = t
    }

    deinit {
        close(queueFD)
        close(tmpFD)
    }

    /// A fresh queue id: time-ordered, with random bits; uniqueness is enforced by the rename.
    public static func newID() -> QueueID {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return QueueID(micros: UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec / 1000), random: UInt32.random(in: 0..<(1 << 30)))
    }

    /// Stores a message durably: write to tmp/, fsync, rename into queue/ (never over an existing file),
    /// fsync queue/. On any failure nothing is left behind and the error says which step failed.
    public func store(id: QueueID, header: [UInt8], data: [[UInt8]]) throws(QueueError) {
        let name = id.text
        let fd = openat(tmpFD, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Self.error("create", errno) }
        var ok = false
        defer {
            if !ok { unlinkat(tmpFD, name, 0) }
        }
        do {
            defer { close(fd) }
            for chunk in [header] + data {
                try Self.writeAll(fd, chunk)
            }
            if fsync(fd) != 0 { throw Self.error("fsync", errno) }
        }
        if rg_rename_noreplace(tmpFD, name, queueFD, name) != 0 { throw Self.error("rename", errno) }
        if fsync(queueFD) != 0 {
            // Not known to be durable: take it back out, and let the client retry.
            let e = errno
            unlinkat(queueFD, name, 0)
            throw Self.error("fsync queue directory", e)
        }
        ok = true
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(QueueError) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw error("write", errno)
            }
            offset += n
        }
    }

    static func error(_ step: String, _ e: Int32) -> QueueError {
        (e == ENOSPC || e == EDQUOT) ? .noSpace(step: step) : .io(step: step, errno: e)
    }

    /// Start-up recovery: leftovers in tmp/ never got their 250, so they go; every file in queue/ was
    /// acknowledged, so it stays, and one that cannot be read back moves to quarantine/.
    public func recover() -> RecoveryReport {
        var report = RecoveryReport()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "\(root)/tmp")) ?? [] {
            if unlinkat(tmpFD, name, 0) == 0 { report.removedTemporary += 1 }
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "\(root)/queue")) ?? [] {
            if QueueID(name) != nil, (try? load(name)) != nil {
                report.queued += 1
            } else {
                rename("\(root)/queue/\(name)", "\(root)/quarantine/\(name)")
                report.quarantined.append(name)
            }
        }
        if !report.quarantined.isEmpty { fsync(queueFD) }
        // A state file whose message is gone (completed or removed mid-way) is a leftover.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "\(root)/state")) ?? [] where place(of: name) == nil {
            unlink("\(root)/state/\(name)")
        }
        return report
    }

    public struct Entry: Sendable {
        public let envelope: StoredEnvelope
        public let message: ArraySlice<UInt8>
    }

    /// All queued message ids, oldest first.
    public func ids() -> [QueueID] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/queue")) ?? []).compactMap(QueueID.init).sorted()
    }

    public enum LoadError: Error, CustomStringConvertible {
        case notFound, unreadable(Int32), corrupt(QueueFile.DecodeError)
        public var description: String {
            switch self {
            case .notFound: return "no such message"
            case .unreadable(let e): return String(cString: strerror(e))
            case .corrupt(let e): return "\(e)"
            }
        }
    }

    public func load(_ id: String) throws(LoadError) -> Entry {
        guard QueueID(id) != nil else { throw .notFound }
        var fd = openat(queueFD, id, O_RDONLY | O_CLOEXEC)
        if fd < 0 && errno == ENOENT { fd = open("\(root)/hold/\(id)", O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { throw errno == ENOENT ? .notFound : .unreadable(errno) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw .unreadable(errno) }
            if n == 0 { break }
            bytes.append(contentsOf: buf[0..<n])
        }
        do {
            let (env, message) = try QueueFile.decode(bytes)
            return Entry(envelope: env, message: message)
        } catch {
            throw .corrupt(error)
        }
    }
}
