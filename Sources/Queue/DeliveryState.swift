import Foundation
import Glibc
import MailModel

/// Per-recipient delivery state, kept beside each queued message in `state/ID` as JSON lines that are
/// only ever appended (docs/queue-format.md). A final outcome (delivered or bounced) is fsynced before
/// anything else happens, so after a crash only recipients without one are tried again.
public struct DeliveryState: Sendable, Hashable {
    public enum Result: String, Codable, Sendable { case delivered, bounced, deferred }

    /// One appended line. Every field is optional so that old and new lines read the same way.
    public struct Line: Codable, Sendable, Hashable {
        public var rcpt: Int?
        public var result: Result?
        public var at: Int?
        public var reply: String?
        public var host: String?
        public var attempts: Int?
        public var next: Int?
        public var flush: Bool?
        /// `queue bounce`: return every pending recipient to the sender at the next attempt.
        public var bounce: Bool?
        /// A delay warning was sent (once per message).
        public var warned: Bool?
        public init(rcpt: Int? = nil, result: Result? = nil, at: Int? = nil, reply: String? = nil, host: String? = nil,
                    attempts: Int? = nil, next: Int? = nil, flush: Bool? = nil, bounce: Bool? = nil, warned: Bool? = nil) {
            self.rcpt = rcpt; self.result = result; self.at = at; self.reply = reply; self.host = host
            self.attempts = attempts; self.next = next; self.flush = flush; self.bounce = bounce; self.warned = warned
        }
    }

    /// Recipients (by index in the envelope) that are done, with how.
    public var final: [Int: Line] = [:]
    /// The last temporary outcome of recipients still pending.
    public var lastDeferral: [Int: Line] = [:]
    public var attempts = 0
    /// Seconds since 1970 of the next attempt; 0: now.
    public var next = 0
    public var bounceRequested = false
    public var warned = false

    public init() {}

    public mutating func apply(_ l: Line) {
        if let i = l.rcpt, let r = l.result {
            switch r {
            case .delivered, .bounced: final[i] = l; lastDeferral[i] = nil
            case .deferred: if final[i] == nil { lastDeferral[i] = l }
            }
        }
        if let a = l.attempts { attempts = a }
        if let n = l.next { next = n }
        if l.flush == true { next = 0 }
        if l.bounce == true { bounceRequested = true; next = 0 }
        if l.warned == true { warned = true }
    }

    public func pending(of count: Int) -> [Int] { (0..<count).filter { final[$0] == nil } }
}

extension SpoolDirectory {
    /// The state of message `id` (empty when it has none yet).
    public func state(_ id: String) -> DeliveryState {
        var s = DeliveryState()
        guard let data = FileManager.default.contents(atPath: "\(root)/state/\(id)") else { return s }
        let decoder = JSONDecoder()
        for line in data.split(separator: 10) {
            // A torn last line (a crash mid-write) is ignored; every complete line counts.
            if let l = try? decoder.decode(DeliveryState.Line.self, from: Data(line)) { s.apply(l) }
        }
        return s
    }

    /// Appends lines to `state/ID`; with `sync`, they are on stable storage when this returns.
    public func record(_ id: String, _ lines: [DeliveryState.Line], sync: Bool) throws(QueueError) {
        guard !lines.isEmpty else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var bytes: [UInt8] = []
        for l in lines {
            bytes += Array((try? encoder.encode(l)) ?? Data("{}".utf8))
            bytes.append(10)
        }
        let fd = open("\(root)/state/\(id)", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Self.error("open state", errno) }
        defer { close(fd) }
        try Self.writeAll(fd, bytes)
        if sync && fsync(fd) != 0 { throw Self.error("fsync state", errno) }
    }

    /// Every recipient is done: the message and its state go (queue file first, so a crash in
    /// between leaves only a state file, which recovery removes). With `durable`, the removal is on
    /// stable storage when this returns: the caller relies on it instead of a recorded outcome.
    public func complete(_ id: String, durable: Bool = false) {
        unlinkat(queueFD, id, 0)
        if durable { fsync(queueFD) }
        unlink("\(root)/state/\(id)")
    }

    public enum Place: String, Sendable { case queue, hold }

    /// Where message `id` is: active, held, or gone.
    public func place(of id: String) -> Place? {
        guard QueueID(id) != nil else { return nil }
        if access("\(root)/queue/\(id)", F_OK) == 0 { return .queue }
        if access("\(root)/hold/\(id)", F_OK) == 0 { return .hold }
        return nil
    }

    /// `queue hold`: out of the runner's sight until released.
    public func hold(_ id: String) -> Bool { move(id, from: "queue", to: "hold") }
    public func release(_ id: String) -> Bool { move(id, from: "hold", to: "queue") }

    func move(_ id: String, from: String, to: String) -> Bool {
        guard QueueID(id) != nil else { return false }
        guard rename("\(root)/\(from)/\(id)", "\(root)/\(to)/\(id)") == 0 else { return false }
        let d = open("\(root)/\(to)", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if d >= 0 { fsync(d); close(d) }
        return true
    }

    /// `queue remove`: the message is gone, undelivered, without a bounce.
    public func remove(_ id: String) -> Bool {
        guard let p = place(of: id) else { return false }
        unlink("\(root)/\(p.rawValue)/\(id)")
        unlink("\(root)/state/\(id)")
        return true
    }

    /// Held message ids, oldest first.
    public func heldIDs() -> [QueueID] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/hold")) ?? []).compactMap(QueueID.init).sorted()
    }

    /// `queue flush`: asks the runner (through the file system, so it works while the server runs)
    /// to try these messages now.
    public func requestFlush(_ ids: [String]) throws(QueueError) {
        for id in ids { try record(id, [DeliveryState.Line(flush: true)], sync: false) }
        let fd = open("\(root)/flush", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        if fd >= 0 { close(fd) }
    }

    /// `queue bounce`: the runner returns the pending recipients at its next look.
    public func requestBounce(_ id: String) throws(QueueError) {
        try record(id, [DeliveryState.Line(bounce: true)], sync: true)
        let fd = open("\(root)/flush", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        if fd >= 0 { close(fd) }
    }

    /// True (once) when a flush was requested since the last call.
    public func takeFlushRequest() -> Bool { unlink("\(root)/flush") == 0 }
}
