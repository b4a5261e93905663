"""A real DNS responder on 127.0.0.1 for tests: UDP, answers from a table, counts the
questions it gets (``hits``), answers SERVFAIL for the names listed in ``servfail`` and
NXDOMAIN for names it does not know at all."""

from __future__ import annotations

import socket
import threading
from collections import Counter

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class Responder:
    """A UDP DNS responder answering from a table; counts the questions it gets."""

    def __init__(self, zone: dict[tuple[str, str], list[str]], servfail: set) -> None:
        self.zone, self.servfail, self.hits = zone, servfail, Counter()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            self.sock.sendto(self._answer(dns.message.from_wire(data)).to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        question = query.question[0]
        key = (question.name.to_text(omit_final_dot=True), dns.rdatatype.to_text(question.rdtype))
        self.hits[key] += 1
        if key in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif key in self.zone:
            rrset = dns.rrset.from_text_list(question.name, 60, "IN", key[1], self.zone[key])
            response.answer.append(rrset)
        elif not any(name == key[0] for name, _ in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    def close(self) -> None:
        self.sock.close()


__all__ = ["Responder"]
