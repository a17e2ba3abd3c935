#!/usr/bin/env python3
"""SMS PDUs for the tests from an independent encoder (PyPI python-gsmmodem-new, gsmmodem.pdu).

  sms_pdu.py deliver SENDER TEXT [REF]
                                   one SMS-DELIVER PDU per line (hex, with an SMSC address), as a
                                   modem gives them to +CMGR; long texts become concatenated parts.
                                   The user data (7-bit packing or UCS-2, concatenation header) is
                                   the library's SMS-SUBMIT encoding, re-framed as SMS-DELIVER.
  sms_pdu.py decode HEX...         one JSON object per PDU (SMS-SUBMIT as pasarela sends it):
                                   number, text, and reference/part/parts when concatenated.
"""
import json
import sys

from gsmmodem.pdu import decodeSmsPdu, encodeSmsSubmitPdu


def semi_octets(digits):
    if len(digits) % 2:
        digits += "F"
    return "".join(digits[i + 1] + digits[i] for i in range(0, len(digits), 2))


def address(number):
    digits = number.lstrip("+")
    toa = "91" if number.startswith("+") else "81"
    return "%02X%s%s" % (len(digits), toa, semi_octets(digits))


def smsc(number):
    body = "91" + semi_octets(number.lstrip("+"))
    return "%02X%s" % (len(body) // 2, body)


def utf16_units(text):
    """The text as UTF-16 code units (the library encodes UCS-2 one character at a time, so
    characters outside the BMP are handed to it as their surrogate pairs; a long text may then
    be cut between the two halves of a pair, as some phones do)."""
    units = text.encode("utf-16-be")
    return "".join(chr(int.from_bytes(units[i:i + 2], "big")) for i in range(0, len(units), 2))


def deliver(sender, text, reference=0):
    out = []
    for pdu in encodeSmsSubmitPdu("+4917000000000", utf16_units(text), reference=reference,
                                  requestStatusReport=False):
        b = bytes(pdu.data)
        i = 0
        i += 1 + b[i]  # SMSC (the library writes 00)
        first = b[i]
        i += 1
        i += 1  # MR
        da_digits = b[i]
        i += 2 + (da_digits + 1) // 2
        pid, dcs = b[i], b[i + 1]
        i += 2
        vpf = (first >> 3) & 3
        i += {0: 0, 2: 1}.get(vpf, 7)
        rest = b[i:]  # UDL and UD
        mti = 0x04 | (first & 0x40)  # SMS-DELIVER, no more messages, UDHI as encoded
        tpdu = "%02X%s%02X%02X%s%s" % (
            mti, address(sender), pid, dcs, "52211030000040", rest.hex().upper())
        out.append(smsc("+4917000000") + tpdu)
    return out


def decode(hexes):
    for h in hexes:
        d = decodeSmsPdu(h)
        o = {"number": d.get("number"), "text": d.get("text"), "type": d.get("type")}
        udh = d.get("udh") or []
        for ie in udh:
            if hasattr(ie, "reference"):
                o.update(reference=ie.reference, part=ie.number, parts=ie.parts)
        print(json.dumps(o, ensure_ascii=False))


if __name__ == "__main__":
    if sys.argv[1] == "deliver":
        ref = int(sys.argv[4]) if len(sys.argv) > 4 else 0
        print("\n".join(deliver(sys.argv[2], sys.argv[3], ref)))
    elif sys.argv[1] == "decode":
        decode(sys.argv[2:])
