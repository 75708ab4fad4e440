import Foundation
import MailModel

/// The envelope as stored: version 1 of the queue file format (docs/queue-format.md).
public struct StoredEnvelope: Codable, Sendable, Hashable {
    public struct StoredRecipient: Codable, Sendable, Hashable {
        public var address: String        // forward-path without brackets; "Postmaster" for <Postmaster>
        public var notify: [String]?
        public var orcpt: String?         // "addr-type;address", xtext-decoded
        public init(address: String, notify: [String]? = nil, orcpt: String? = nil) {
            self.address = address; self.notify = notify; self.orcpt = orcpt
        }
    }
    public struct Client: Codable, Sendable, Hashable {
        public var address: String
        public var helo: String
        public var session: String
        public var listener: String
        public var `protocol`: String
        public init(address: String, helo: String, session: String, listener: String, protocol p: String) {
            self.address = address; self.helo = helo; self.session = session; self.listener = listener; self.protocol = p
        }
    }

    public var id: String
    public var received: Int              // seconds since 1970
    public var sender: String             // reverse-path without brackets; "" for <>
    public var recipients: [StoredRecipient]
    public var size: Int                  // octets of message data, Received header included
    public var body: String?              // "7BIT" | "8BITMIME"
    public var smtputf8: Bool
    public var ret: String?               // "FULL" | "HDRS"
    public var envid: String?
    public var client: Client

    public init(id: String, received: Int, sender: String, recipients: [StoredRecipient], size: Int, body: String?,
                smtputf8: Bool, ret: String?, envid: String?, client: Client) {
        self.id = id; self.received = received; self.sender = sender; self.recipients = recipients; self.size = size
        self.body = body; self.smtputf8 = smtputf8; self.ret = ret; self.envid = envid; self.client = client
    }

    public init(id: QueueID, received: Int, envelope: Envelope, size: Int, client: Client) {
        self.init(
            id: id.text, received: received,
            sender: envelope.sender.mailbox.map { "\($0)" } ?? "",
            recipients: envelope.recipients.map { r in
                StoredRecipient(address: r.path.mailbox.map { "\($0)" } ?? "Postmaster",
                                notify: r.notify?.keywords,
                                orcpt: r.originalRecipient.map { "\($0.addressType);\($0.address)" })
            },
            size: size, body: envelope.body?.rawValue, smtputf8: envelope.smtpUTF8, ret: envelope.dsnReturn?.rawValue,
            envid: envelope.envelopeID, client: client)
    }
}

/// Encoding and decoding of a queue file: a magic line with the version, one line of JSON envelope,
/// then the message exactly as it will be sent (CRLF lines).
public enum QueueFile {
    public static let magic = "RELAYGATE-QUEUE 1"

    public static func header(_ envelope: StoredEnvelope) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // JSON escapes control characters, so the envelope line never holds a raw newline.
        let json = (try? encoder.encode(envelope)) ?? Data("{}".utf8)
        return Array((magic + "\n").utf8) + Array(json) + [10]
    }

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case notAQueueFile, unsupportedVersion(String), badEnvelope(String)
        public var description: String {
            switch self {
            case .notAQueueFile: return "not a queue file"
            case .unsupportedVersion(let v): return "unsupported queue file version '\(v)'"
            case .badEnvelope(let why): return "bad envelope: \(why)"
            }
        }
    }

    /// Splits a file's bytes into envelope and message.
    public static func decode(_ bytes: [UInt8]) throws(DecodeError) -> (StoredEnvelope, ArraySlice<UInt8>) {
        guard let nl1 = bytes.firstIndex(of: 10) else { throw .notAQueueFile }
        let first = String(decoding: bytes[..<nl1], as: UTF8.self)
        guard first.hasPrefix("RELAYGATE-QUEUE ") else { throw .notAQueueFile }
        guard first == magic else { throw .unsupportedVersion(String(first.dropFirst(16))) }
        guard let nl2 = bytes[(nl1 + 1)...].firstIndex(of: 10) else { throw .badEnvelope("no end of envelope line") }
        do {
            let env = try JSONDecoder().decode(StoredEnvelope.self, from: Data(bytes[(nl1 + 1)..<nl2]))
            return (env, bytes[(nl2 + 1)...])
        } catch {
            throw .badEnvelope("\(error)")
        }
    }
}
