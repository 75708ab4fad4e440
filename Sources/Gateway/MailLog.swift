import Delivery
import Glibc
import MailModel
import Synchronization

/// The mail log: one line per event, `key=value` (text) or one JSON object, each with the session id.
/// Debug lines are a separate stream, off unless asked for. Passwords and message data never reach it.
public final class MailLog: Sendable {
    public enum Format: String, Sendable { case text, json }

    public let format: Format
    public let debugEnabled: Bool
    let fd: Int32
    let lock = Mutex<Void>(())

    public init(format: Format, debug: Bool = false, fd: Int32 = 2) {
        self.format = format
        self.debugEnabled = debug
        self.fd = fd
    }

    public func event(_ name: String, session: SessionID? = nil, _ fields: [(String, String)] = []) {
        emit(level: "info", name, session: session, fields)
    }

    public func warning(_ name: String, session: SessionID? = nil, _ fields: [(String, String)] = []) {
        emit(level: "warning", name, session: session, fields)
    }

    public func error(_ name: String, session: SessionID? = nil, _ fields: [(String, String)] = []) {
        emit(level: "error", name, session: session, fields)
    }

    public func debug(_ name: String, session: SessionID? = nil, _ fields: @autoclosure () -> [(String, String)]) {
        guard debugEnabled else { return }
        emit(level: "debug", name, session: session, fields())
    }

    func emit(level: String, _ name: String, session: SessionID?, _ fields: [(String, String)]) {
        var all: [(String, String)] = [("ts", Self.timestamp()), ("level", level), ("event", name)]
        if let session { all.append(("session", session.description)) }
        all += fields
        let line: String
        switch format {
        case .text: line = all.map { "\($0.0)=\(Self.textValue($0.1))" }.joined(separator: " ") + "\n"
        case .json: line = "{" + all.map { "\(Self.jsonString($0.0)):\(Self.jsonString($0.1))" }.joined(separator: ",") + "}\n"
        }
        let bytes = Array(line.utf8)
        lock.withLock { _ in
            var off = 0
            while off < bytes.count {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
                if n <= 0 { if errno == EINTR { continue }; break }
                off += n
            }
        }
    }

    /// Bare when safe to grep; otherwise in double quotes with `\"`, `\\` and `\xHH` escapes.
    static func textValue(_ v: String) -> String {
        let safe = !v.isEmpty && v.utf8.allSatisfy { $0 > 0x20 && $0 != 0x22 && $0 != 0x3d && $0 != 0x5c && $0 != 0x7f }
        if safe { return v }
        var out = "\""
        for s in v.unicodeScalars {
            switch s {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            default:
                if s.value < 0x20 || s.value == 0x7f { out += "\\x" + hex2(UInt8(s.value)) } else { out.unicodeScalars.append(s) }
            }
        }
        return out + "\""
    }

    static func jsonString(_ v: String) -> String {
        var out = "\""
        for s in v.unicodeScalars {
            switch s {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if s.value < 0x20 || s.value == 0x7f { out += "\\u00" + hex2(UInt8(s.value)) } else { out.unicodeScalars.append(s) }
            }
        }
        return out + "\""
    }

    static func hex2(_ b: UInt8) -> String {
        let h = Array("0123456789abcdef")
        return String([h[Int(b >> 4)], h[Int(b & 15)]])
    }

    /// RFC 3339 UTC with milliseconds.
    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        func pad(_ v: Int, _ w: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s }
        return "\(pad(Int(tm.tm_year) + 1900, 4))-\(pad(Int(tm.tm_mon) + 1, 2))-\(pad(Int(tm.tm_mday), 2))T"
            + "\(pad(Int(tm.tm_hour), 2)):\(pad(Int(tm.tm_min), 2)):\(pad(Int(tm.tm_sec), 2)).\(pad(ts.tv_nsec / 1_000_000, 3))Z"
    }
}


extension MailLog: DeliveryLogger {
    public func deliveryEvent(_ name: String, warning: Bool, _ fields: [(String, String)]) {
        if warning { self.warning(name, fields) } else { event(name, fields) }
    }
}
