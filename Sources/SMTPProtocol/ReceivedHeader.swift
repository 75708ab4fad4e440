import Glibc
import MailModel

/// The trace header a relay prepends (RFC 5321 4.4), with RFC 3848 / RFC 6531 protocol words.
public enum ReceivedHeader {
    /// - Parameters:
    ///   - heloName: what the client said in HELO/EHLO (already validated: no spaces or controls).
    ///   - clientName: its verified reverse-DNS name, when one is known.
    ///   - recipient: named in `for` only when the message has exactly one (privacy, as Postfix does).
    public static func format(heloName: String, clientAddress: IPAddress, clientName: String?, hostname: String,
                              protocolWord: String, queueID: QueueID, recipient: ForwardPath?, tls: String? = nil,
                              date: Int) -> [UInt8] {
        let literal = clientAddress.unmapped.isV4 ? "[\(clientAddress.unmapped)]" : "[IPv6:\(clientAddress)]"
        let tcpInfo = clientName.map { "\($0) \(literal)" } ?? literal
        var text = "Received: from \(heloName.isEmpty ? "unknown" : heloName) (\(tcpInfo))\r\n"
        text += "\tby \(hostname) (Relaygate)"
        if let tls { text += " (\(tls))" }
        text += " with \(protocolWord) id \(queueID)"
        if let recipient { text += "\r\n\tfor \(recipient)" }
        text += ";\r\n\t\(rfc5322Date(date))\r\n"
        return Array(text.utf8)
    }

    /// `Thu, 03 Dec 2026 21:55:32 +0000` (RFC 5322 3.3), in UTC.
    public static func rfc5322Date(_ seconds: Int) -> String {
        var t = time_t(seconds)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(tm.tm_wday)]), \(two(tm.tm_mday)) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) "
            + "\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) +0000"
    }
}
