"""libfota2.explain(ret) logs the seed's fota_cb lines (seed 001 §6.4.1) for every result code,
exactly as the LuatOS demo prints them."""

from mpdevice import run_code

EXPECTED = {
    0: ["I/user.fota 0", "I/user.升级包下载成功,重启模块"],
    1: ["I/user.fota 1", "I/user.连接失败 请检查url拼写或服务器配置(是否为内网)"],
    2: ["I/user.fota 2", "I/user.url错误 检查url拼写"],
    3: ["I/user.fota 3", "I/user.服务器断开 检查服务器白名单配置"],
    4: ["I/user.fota 4", "E/user.FOTA 失败 原因可能有:",
        "1) 服务器返回 200/206 但报文体为空(0 字节)—— 通常是升级包文件缺失或 URL 指向空文件;",
        "2) 服务器返回 4xx/5xx 等异常状态码 —— 请确认升级包已上传、URL 正确、鉴权信息有效;",
        "3) 已经是最新版本,无需升级"],
    5: ["I/user.fota 5", "I/user.版本号书写错误 iot平台版本号需要使用xxx.yyy.zzz形式"],
    7: ["I/user.fota 7", "I/user.不是上面几种情况 ret为 7"],
}


def test_every_result_code_logs_the_seed_text():
    for ret, lines in EXPECTED.items():
        proc = run_code(f"import libfota2\nlibfota2.explain({ret})\n")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == lines, (ret, proc.stdout)
