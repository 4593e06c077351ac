# Hostile JSON against every device entry point that reads JSON from outside, inside the unix
# port: the IoT platform's answer (libfota2's diagnosis and its log line), Luat update's answer,
# an Aliyun upgrade message, a TCP trigger command and an update package's manifest (its
# size limit aside: 4096 bytes are enough to nest deep). The host fuzzers run the same parsers
# under CPython, whose json module and recursion limit differ: what fails only here (printing a
# value nested too deep, this json module's own acceptance) is found here. Each case must end in
# a value or in the parser's own refusal (aliyun_ota.BadJob, package.PackageError); nothing else.
import vb

TIMEOUT = 180
CASES = 1500

# Field names the parsers look for, so that generated objects reach their checks.
_KEYS = ("code", "msg", "data", "url", "size", "md5", "sign", "signMethod", "files", "fileUrl",
         "fileSize", "fileMd5", "fileSign", "fileName", "module", "version", "isDiff", "extData",
         "digestsign", "id", "fota", "x", "format", "project", "firmware_name", "from", "to",
         "core", "script", "counter", "sections", "type", "sha256", "unpacked", "keep",
         "base_sha256")
# A manifest the parser accepts (a core section), given one field again in the top object or
# in its section.
_MANIFEST = ('{"format":1,"project":"P","firmware_name":"F","to":{"core":"2.0.0"},"sections":'
             '[{"type":"core","size":1000,"md5":"%s","sha256":"%s"%%s}]%%s}' % ("0" * 32, "0" * 64))
_STRINGS = ('""', '"http://127.0.0.1:1/fw.bin"', '"https://h/a.bin"', '"MD5"', '"sha256"',
            '"default"', '"true"', '"' + "ab" * 16 + '"', '"' + "0" * 64 + '"', '"中文\\u0000"',
            '"\\ud800"', '"' + "x" * 3000 + '"', '"43"', '"###http://h/x"')
_WRONG = '"{}[]:,\\x'  # characters that break JSON where they land
_NUMBERS = ("0", "-1", "43", "27", "1000", "4096", "1.5", "-0.0", "1e308", "1e999",
            "9" * 60, "-" + "9" * 30, "0.000001")


def _value(rng, depth):
    k = rng.next(10)
    if k == 0 or depth > 4:
        return ("true", "false", "null")[rng.next(3)]
    if k <= 2:
        return _NUMBERS[rng.next(len(_NUMBERS))]
    if k <= 4:
        return _STRINGS[rng.next(len(_STRINGS))]
    if k == 5:  # deeper than repr() or str() can go
        n = (10, 300, 3000)[rng.next(3)]
        return "[" * n + "]" * n
    if k == 6:
        return "[" + ",".join(_value(rng, depth + 1) for _ in range(rng.next(4))) + "]"
    return _object(rng, depth + 1)


def _object(rng, depth):
    fields = []
    for _ in range(rng.next(7)):
        key = _KEYS[rng.next(len(_KEYS))]
        fields.append('"%s":%s' % (key, _value(rng, depth)))
    return "{" + ",".join(fields) + "}"


def _message(rng):
    # Mostly shaped like what each parser expects, so that the checks past the first run.
    k = rng.next(8)
    if k == 0:
        text = _value(rng, 0)
    elif k <= 2:
        text = '{"code":"1000","id":1,"data":%s}' % _object(rng, 1)
    elif k <= 4:  # a good job with one field given again (the last one counts)
        text = ('{"code":"1000","id":1,"data":{"url":"http://127.0.0.1:1/fw.bin","size":1000,'
                '"md5":"%s","version":"2.0.0","%s":%s}}'
                % ("ab" * 16, _KEYS[rng.next(len(_KEYS))], _value(rng, 2)))
    elif k == 5:
        field = ',"%s":%s' % (_KEYS[rng.next(len(_KEYS))], _value(rng, 2))
        text = _MANIFEST % ((field, "") if rng.next(2) else ("", field))
    else:
        text = _object(rng, 0)
    cut = rng.next(6)
    if cut == 0 and text:
        text = text[:rng.next(len(text))]  # cut short
    elif cut == 1 and text:
        i = rng.next(len(text))
        text = text[:i] + _WRONG[rng.next(len(_WRONG))] + text[i + 1:]  # one character wrong
    return text


def test_hostile_json_ends_in_a_value_or_a_refusal(vboard):
    vb.boot()
    import aliyun_ota
    import libfota2
    import libfota2log
    import update
    from mpfota import log, package
    from triggers import tcp

    # Log lines are made as print() would make them (str() of every argument) but not printed:
    # 1,500 diagnoses of half-KB bodies would flood the test's output.
    log._emit = lambda mark, tag, args: " ".join([str(a) for a in args])
    rng = vb.Rng(0x5EED1234)
    reasons = {}
    parsed = manifests = 0
    for case in range(CASES):
        text = _message(rng)
        try:
            code = libfota2log.iot_code(text)
            label, why = libfota2log.iot_explain(code)
            assert isinstance(label, str) and isinstance(why, str)
            out = libfota2.Outcome()
            out.status, out.body = 500, text[:512]  # what libfota2 keeps of a body
            libfota2._explain(out, "http://iot.openluat.com/api/site/firmware_upgrade?")
            code, msg = update.answer_of(text)
            assert code is None or isinstance(code, str)
            assert msg is None or isinstance(msg, str)
            reply = tcp.parse(text)
            assert reply is None or reply["event"] in ("fota", "ignored", "error")
            try:
                package.parse_manifest(text.encode())
                manifests += 1
            except package.PackageError as e:
                assert e.reason in ("format", "unsupported"), e
            try:
                aliyun_ota.parse_job(text, capacity=1 << 20)
                parsed += 1
            except aliyun_ota.BadJob as e:
                assert isinstance(e.desc, str) and len(e.desc) < 400, e.desc
                reason = " ".join(e.desc.split(" ")[:4])
                reasons[reason] = reasons.get(reason, 0) + 1
        except Exception as e:
            raise AssertionError("case %d: %r on %r" % (case, e, text[:200]))
    # The cases reached the parsers' checks: many kinds of refusal, and jobs that passed.
    assert len(reasons) >= 12 and parsed > 10 and manifests > 10, (parsed, manifests, reasons)
