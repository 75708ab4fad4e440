import XCTest
@testable import MailModel

final class MailModelTests: XCTestCase {
    func testNetworkEdges() {
        let all4 = IPNetwork("0.0.0.0/0")!
        XCTAssertTrue(all4.contains(IPAddress("203.0.113.9")!))
        XCTAssertFalse(all4.contains(IPAddress("2001:db8::1")!))
        let host = IPNetwork("192.0.2.1/32")!
        XCTAssertTrue(host.contains(IPAddress("192.0.2.1")!))
        XCTAssertFalse(host.contains(IPAddress("192.0.2.2")!))
        let v6host = IPNetwork("2001:db8::1/128")!
        XCTAssertTrue(v6host.contains(IPAddress("2001:db8:0::1")!))
        XCTAssertFalse(v6host.contains(IPAddress("2001:db8::2")!))
        let net = IPNetwork("2001:db8::/32")!
        XCTAssertTrue(net.contains(IPAddress("2001:db8:ffff::1")!))
        XCTAssertFalse(net.contains(IPAddress("2001:db9::1")!))
        // IPv4-mapped IPv6 compares as IPv4, on both sides.
        XCTAssertTrue(IPNetwork("127.0.0.1/32")!.contains(IPAddress("::ffff:127.0.0.1")!))
        XCTAssertTrue(IPNetwork("::ffff:10.0.0.0/104")!.contains(IPAddress("10.1.2.3")!))
        XCTAssertEqual(IPNetwork("10.1.2.3/8")!.description, "10.0.0.0/8")
        for bad in ["10.0.0.0/33", "2001:db8::/129", "10.0.0/8", "x/1", "10.0.0.0/-1", "10.0.0.0/", "1.2.3.4/ 8"] {
            XCTAssertNil(IPNetwork(bad), bad)
        }
    }

    func testIPAddressText() {
        XCTAssertEqual(IPAddress("::1")!.description, "::1")
        XCTAssertEqual(IPAddress("2001:DB8:0:0::1")!.description, "2001:db8::1")
        XCTAssertNil(IPAddress("1.2.3.256"))
        XCTAssertNil(IPAddress("01.2.3.4x"))
        XCTAssertNil(IPAddress(""))
    }

    func testDomainsCompareCaseInsensitivelyWithoutTrailingDot() {
        XCTAssertEqual(DomainName("Example.ORG."), DomainName("example.org"))
        XCTAssertNotEqual(DomainName("example.org.evil.test"), DomainName("example.org"))
        XCTAssertNil(DomainName("-bad.example"))
        XCTAssertNil(DomainName("bad-.example"))
        XCTAssertNil(DomainName("a..b"))
        XCTAssertNil(DomainName(String(repeating: "a", count: 64) + ".test"))
        XCTAssertNotNil(DomainName(String(repeating: "a", count: 63) + ".test"))
        XCTAssertNil(DomainName("例子.测试"))
        XCTAssertNotNil(DomainName("例子.测试", allowUTF8: true))
    }

    func testQueueIDsSortByTime() {
        let a = QueueID(micros: 1_000, random: 999), b = QueueID(micros: 1_001, random: 0)
        XCTAssertLessThan(a, b)
        XCTAssertEqual(a.text.count, 16)
        XCTAssertNotNil(QueueID(a.text))
        XCTAssertNil(QueueID("../../etc/passwd"))
        XCTAssertNil(QueueID("ABCDEFGHJKMNPQRS"))
    }
}
