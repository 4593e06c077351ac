# Scenario 1 of seed 001 (§6.4.1): the simple libfota2 demo, as LuatOS's fota2 demo update.lua.
#
# At boot, once the default network adapter is up, ask the FOTA server for an update; a
# downloaded and verified package reboots the board into it. Every 4 hours, ask again. The
# version is printed every 3 s so the change is easy to see.
#
# `mpfota scenario 1` (docs/scenarios.md) runs this file on the virtual board against
# `mpfota serve`, after rewriting the settings block below; on a real board, write your own.
import board
import libfota2
import lnet as socket
import lsys as sys
from mpfota import confirm

log = sys.log

# ---- settings: begin ----
PROJECT = "FOTA2_DEMO"
VERSION = "001.000.000"
PRODUCT_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
FOTA_URL = "http://192.168.1.5:8080/upgrade?"  # `mpfota serve` on a machine of the LAN
RUN_FOR_MS = 0  # 0: run for ever, as a device does; the host demo ends a boot this long after
#                 the answer of its first check
WIFI_SSID = ""  # ESP32: the Wi-Fi network to join; "" when the network needs no set-up
WIFI_PASSWORD = ""
# ---- settings: end ----

# netdrv_wifi (seed §6.1, the network card): join Wi-Fi; lnet reports "WIFI" up once connected.
if WIFI_SSID:
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    wlan.connect(WIFI_SSID, WIFI_PASSWORD)

sys.PROJECT = PROJECT
sys.VERSION = VERSION
sys.PRODUCT_KEY = PRODUCT_KEY

# mpfota: a new core boots "pending" and is confirmed once it is healthy (here: it reaches the
# network), else the next reset rolls it back. LuatOS has no such step.
boot_state = confirm.check_boot()


# 循环打印版本号, 方便看版本号变化, 非必须
def get_version():
    log.info("fota", "脚本版本号", sys.VERSION, "core版本号", board.core_version())


sys.timerLoopStart(get_version, 3000)


# 升级结果的回调函数
# result: 0 成功, 1 连接失败, 2 url错误, 3 服务器断开, 4 接收报文错误,
#         5 使用iot平台VERSION需要使用 xxx.yyy.zzz形式
def fota_cb(ret):
    libfota2.explain(ret)  # the seed's log lines for each result code
    if ret == 0:
        board.reset()  # rtos.reboot()
    if RUN_FOR_MS:  # the host demo only: end this boot a while after the answer
        sys.timerStart(sys.stop, RUN_FOR_MS)


# 使用第三方服务器, 配置 opts 参数 (all optional, docs/scenarios.md): without "###" in
# front of the url, libfota2 appends imei, project_key, firmware_name and version, which
# `mpfota serve` needs to decide; with "###" the url is requested as it is.
opts = {
    "url": FOTA_URL,
}


async def fota_task_func():
    # 如果当前时间点设置的默认网卡还没有连接成功,一直在这里循环等待
    while not socket.adapter(socket.dft()):
        log.warn("fota_task_func", "wait IP_READY", socket.dft())
        # 1 秒超时: libnetif.set_priority_order 可能改变默认网卡, 超时后重新判断
        await sys.waitUntil("IP_READY", 1000)

    # 检测到了IP_READY消息
    log.info("fota_task_func", "recv IP_READY", socket.dft())
    if boot_state == "pending":
        confirm.confirm()

    log.info("开始检查升级")
    libfota2.request(fota_cb, opts)


# 创建并且启动一个task, 运行这个task的主函数fota_task_func
sys.taskInit(fota_task_func)
# 演示定时自动升级, 每隔4小时自动检查一次
sys.timerLoopStart(libfota2.request, 4 * 3600000, fota_cb, opts)
sys.run()
