import Glibc
import MailModel

/// This host's interface addresses (for "is this address literal one of ours?").
public enum InterfaceAddresses {
    public static func all() -> Set<IPAddress> {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return [] }
        defer { freeifaddrs(head) }
        var out = Set<IPAddress>()
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let node = p {
            if let sa = node.pointee.ifa_addr {
                switch Int32(sa.pointee.sa_family) {
                case AF_INET:
                    let sin = UnsafeRawPointer(sa).assumingMemoryBound(to: sockaddr_in.self).pointee
                    out.insert(.v4(UInt32(bigEndian: sin.sin_addr.s_addr)))
                case AF_INET6:
                    let sin6 = UnsafeRawPointer(sa).assumingMemoryBound(to: sockaddr_in6.self).pointee
                    out.insert(IPAddress(in6: sin6.sin6_addr))
                default: break
                }
            }
            p = node.pointee.ifa_next
        }
        return out
    }
}
