import MailModel
import SMTPProtocol

/// Delivery status notifications (RFC 3464, RFC 3461, RFC 6522 multipart/report): what a bounce says.
/// Pure: the caller passes the time, the ids and the original message.
public enum DSN {
    /// RFC 3464 2.3.3.
    public enum Action: String, Sendable { case failed, delayed, relayed }

    public struct Failure: Sendable, Hashable {
        /// The recipient as it was given (forward-path without brackets).
        public var recipient: String
        public var orcpt: String?
        /// `5.1.1` or, for expiry, `4.4.7` style codes.
        public var status: String
        /// The remote host that answered, if any.
        public var remoteHost: String?
        /// `smtp; 550 5.1.1 User unknown`, or a local reason.
        public var diagnostic: String
        public var lastAttempt: Int?
        public init(recipient: String, orcpt: String? = nil, status: String, remoteHost: String? = nil, diagnostic: String,
                    lastAttempt: Int? = nil) {
            self.recipient = recipient; self.orcpt = orcpt; self.status = status; self.remoteHost = remoteHost
            self.diagnostic = diagnostic; self.lastAttempt = lastAttempt
        }
    }

    /// A complete message (headers and body, CRLF lines) from `MAILER-DAEMON@hostname` to the original
    /// sender, reporting `failures`. `ret` FULL returns the whole message, otherwise its headers only
    /// (RFC 3461 4.3: HDRS is the default we choose, as the original may be large).
    public static func bounce(hostname: String, originalSender: String, queueID: String, envelopeID: String?,
                              received: Int, failures: [Failure], original: ArraySlice<UInt8>, ret: String?,
                              now: Int, boundarySeed: String, action: Action = .failed) -> [UInt8] {
        let boundary = "\(queueID).\(boundarySeed)/\(hostname)"
        let date = ReceivedHeader.rfc5322Date(now)
        let expired = failures.allSatisfy { $0.status.hasPrefix("4.") }
        var h = ""
        h += "From: Mail Delivery System <MAILER-DAEMON@\(hostname)>\r\n"
        h += "To: <\(originalSender)>\r\n"
        let subject: String
        switch action {
        case .delayed: subject = "Delayed Mail (still being retried)"
        case .relayed: subject = "Successful Mail Delivery Report"
        case .failed: subject = expired ? "Undelivered Mail: delivery time expired" : "Undelivered Mail Returned to Sender"
        }
        h += "Subject: \(subject)\r\n"
        h += "Date: \(date)\r\n"
        h += "Message-ID: <\(queueID).\(boundarySeed)@\(hostname)>\r\n"
        h += "Auto-Submitted: auto-replied\r\n"
        h += "MIME-Version: 1.0\r\n"
        h += "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"\(boundary)\"\r\n"
        h += "\r\n"
        h += "This is a MIME-encapsulated message.\r\n\r\n"
        h += "--\(boundary)\r\n"
        h += "Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        h += "This is the mail system at host \(hostname).\r\n\r\n"
        if action == .delayed {
            h += "Your message could not be delivered to one or more recipients yet.\r\n"
            h += "Delivery will be tried again; no action is needed on your part.\r\n\r\n"
        } else if action == .relayed {
            h += "Your message was passed on to a system that does not report deliveries,\r\n"
            h += "so this is the last report you will get for these recipients.\r\n\r\n"
        } else {
            h += "Your message could not be delivered to one or more recipients.\r\n"
            h += expired ? "It stayed in the queue for too long without being accepted.\r\n\r\n" : "It was refused permanently.\r\n\r\n"
        }
        for f in failures {
            h += "<\(f.recipient)>: \(ascii(f.diagnostic))\r\n"
        }
        h += "\r\n--\(boundary)\r\n"
        h += "Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
        // RFC 3464 2.2: per-message fields.
        h += "Reporting-MTA: dns; \(hostname)\r\n"
        h += "X-Relaygate-Queue-ID: \(queueID)\r\n"
        if let envid = envelopeID { h += "Original-Envelope-Id: \(ascii(envid))\r\n" }
        h += "Arrival-Date: \(ReceivedHeader.rfc5322Date(received))\r\n"
        for f in failures {
            // RFC 3464 2.3: per-recipient fields.
            h += "\r\n"
            if let o = f.orcpt { h += "Original-Recipient: \(ascii(o))\r\n" }
            h += "Final-Recipient: rfc822; \(f.recipient)\r\n"
            h += "Action: \(action.rawValue)\r\n"
            h += "Status: \(f.status)\r\n"
            if let r = f.remoteHost { h += "Remote-MTA: dns; \(r)\r\n" }
            h += "Diagnostic-Code: \(ascii(f.diagnostic))\r\n"
            if let t = f.lastAttempt { h += "Last-Attempt-Date: \(ReceivedHeader.rfc5322Date(t))\r\n" }
        }
        h += "\r\n--\(boundary)\r\n"
        var out = Array(h.utf8)
        let full = ret == "FULL"
        out += Array("Content-Description: \(full ? "Undelivered Message" : "Undelivered Message Headers")\r\n".utf8)
        out += Array("Content-Type: \(full ? "message/rfc822" : "text/rfc822-headers")\r\n\r\n".utf8)
        out += full ? Array(original) : headers(of: original)
        if !(out.count >= 2 && out[out.count - 2] == 13 && out[out.count - 1] == 10) { out += [13, 10] }
        out += Array("\r\n--\(boundary)--\r\n".utf8)
        return out
    }

    /// The header section of a message (up to the first empty line).
    static func headers(of message: ArraySlice<UInt8>) -> [UInt8] {
        var i = message.startIndex
        while i + 1 < message.endIndex {
            if message[i] == 13 && message[i + 1] == 10 {
                // An empty line: CRLF at the start or right after another CRLF.
                if i == message.startIndex { return [] }
                if i >= message.startIndex + 2 && message[i - 2] == 13 && message[i - 1] == 10 {
                    return Array(message[message.startIndex..<i])
                }
            }
            i += 1
        }
        return Array(message)
    }

    /// Header fields carry ASCII only; anything else, and CR/LF, becomes `?`.
    static func ascii(_ s: String) -> String {
        String(decoding: s.utf8.prefix(900).map { ($0 >= 0x20 && $0 < 0x7f) || $0 == 9 ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
    }
}

