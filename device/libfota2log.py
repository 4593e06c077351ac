# The log texts of libfota2, kept apart because a successful update logs none of them: the
# seed's fota_cb messages (explain) and what the IoT platform's answer codes mean (result 4
# from iot.openluat.com). Pure: runs under CPython too. The app calls them through libfota2.
from libfota2 import NOT_JSON


def iot_code(body):
    # The IoT platform's "code" in a JSON answer; NOT_JSON when the answer is not a JSON
    # object ({...}); None when the object has no code.
    if not isinstance(body, str) or body[:1] != "{" or body[-1:] != "}":
        return NOT_JSON
    import json

    try:
        obj = json.loads(body)
    except (ValueError, RuntimeError):  # RuntimeError: CPython's json nests by recursion
        return NOT_JSON
    if not isinstance(obj, dict):
        return NOT_JSON
    return obj.get("code")


# What the IoT platform's codes mean (labels as the platform names them; our explanations).
_IOT = {
    43: ("请等待", "the platform is building a delta package: ask again in 1 to 3 minutes"),
    3: ("无效的设备", "unknown device: check the parameter names (imei in lower case)"),
    17: ("无权限", "device, firmware and project key are not all under one account"),
    21: ("不允许升级", "upgrades are disabled for this device on the platform"),
    25: ("无效的项目", "the project key matches no project of this account"),
    26: ("无效的固件", "firmware_name matches no firmware of the project"),
    27: ("已是最新版本", "up to date, not in the upgrade list, or upgrades set to no"),
    40: ("循环升级", "upgrades stopped after about six requests in a day: lift the ban on "
         "the platform"),
}


def iot_explain(code):
    # (label, explanation) of a platform code, for the log. Any JSON value may come as the
    # code: a list or an object cannot be a key (TypeError), and is unknown like any other.
    if code == NOT_JSON:
        return ("云平台下发的不是json", "the platform's answer is not JSON")
    try:
        return _IOT[code]
    except (KeyError, TypeError):
        from mpfota.brief import brief

        return ("不是上面的那些错误code", "unknown platform code " + brief(code))


# The seed's fota_cb messages (seed 001 §6.4.1), one per result code: (level, tag, text).
_CB_TEXT = (
    ("I", "升级包下载成功,重启模块", None),
    ("I", "连接失败", "请检查url拼写或服务器配置(是否为内网)"),
    ("I", "url错误", "检查url拼写"),
    ("I", "服务器断开", "检查服务器白名单配置"),
    ("E", "FOTA 失败", "原因可能有:\n"
     "1) 服务器返回 200/206 但报文体为空(0 字节)—— 通常是升级包文件缺失或 URL 指向空文件;\n"
     "2) 服务器返回 4xx/5xx 等异常状态码 —— 请确认升级包已上传、URL 正确、鉴权信息有效;\n"
     "3) 已经是最新版本,无需升级"),
    ("I", "版本号书写错误", "iot平台版本号需要使用xxx.yyy.zzz形式"),
)


def explain(ret):
    # "fota", ret, then the seed's text for that result.
    from mpfota import log

    log.info("fota", ret)
    if isinstance(ret, int) and 0 <= ret < len(_CB_TEXT):
        level, tag, text = _CB_TEXT[ret]
        args = () if text is None else (text,)
        (log.error if level == "E" else log.info)(tag, *args)
    else:
        log.info("不是上面几种情况 ret为", ret)
