# Scenario 3 of seed 001 (§6.4.3): FOTA on a board that spends its life in deep sleep (LuatOS
# PSM+), as LuatOS's fota2 demo psm_power_fota.lua.
#
# The risk: going back to sleep before the update has finished. So at each wake the board asks
# for an update and waits for the result (the callback publishes "FOTA_END") for at most 15 s.
# A downloaded update reboots the board into it at once; the new image asks again, hears "already
# latest", and only then sleeps. Sleep lasts 4 hours (the wake timer), then it all repeats.
#
# `mpfota scenario 3` (docs/scenarios.md) runs this file on the virtual board against
# `mpfota serve`; the runner stands for the wake timer and shortens the 4 hours (--sleep-scale).
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
FOTA_WAIT_MS = 15000  # longest wait for "FOTA_END" before sleeping
WAKE_MS = 4 * 3600000  # 定时检查升级 (每4小时唤醒一次)
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
# network), else the next reset (a wake from deep sleep too) rolls it back.
boot_state = confirm.check_boot()


# 升级结果的回调函数
# result: 0 成功, 1 连接失败, 2 url错误, 3 服务器断开, 4 接收报文错误,
#         5 使用iot平台VERSION需要使用 xxx.yyy.zzz形式
def fota_cb(ret):
    libfota2.explain(ret)  # the seed's log lines for each result code
    # 升级结束,触发升级回调,发布消息升级结束,可以进入休眠模式
    sys.publish("FOTA_END")
    if ret == 0:
        board.reset()  # rtos.reboot()


opts = {
    "url": FOTA_URL,
}


async def psm_fota_task_func():
    # 被定时器唤醒时, LuatOS 先关闭飞行模式 (mobile.flymode(0, false)); a board without a modem
    # has nothing to do here.
    log.info("开始测试PSM+模式功耗。")
    log.info("psm", "reset cause", board.reset_cause())

    # 如果当前时间点设置的默认网卡还没有连接成功,一直在这里循环等待
    while not socket.adapter(socket.dft()):
        log.warn("fota_task_func", "wait IP_READY", socket.dft())
        await sys.waitUntil("IP_READY", 1000)

    # 检测到了IP_READY消息
    log.info("fota_task_func", "recv IP_READY", socket.dft())
    if boot_state == "pending":
        confirm.confirm()

    log.info("开始检查升级")
    libfota2.request(fota_cb, opts)

    # 打印版本号, 方便看版本号变化, 非必须
    log.info("fota", "脚本版本号", sys.VERSION, "core版本号", board.core_version())

    # 等待下载升级包结束, 发布消息"FOTA_END"; 如果15秒内没有收到消息, 15秒到达后进入PSM+模式.
    # 升级包下载成功后 fota_cb 会立即重启, 新版本再次走到这里, 服务器回复"已经是最新版本",
    # fota_cb 发布"FOTA_END", 才继续向下执行, 进入PSM+模式.
    await sys.waitUntil("FOTA_END", FOTA_WAIT_MS)

    log.info("升级结束,进入PSM模式")

    # LuatOS: gpio.close(24) (GPS backup power and g-sensor off), pm.dtimerStart(2, 4 h),
    # mobile.flymode(0, true), pm.power(pm.WORK_MODE, 3). Here: deep sleep with a wake timer.
    board.deepsleep(WAKE_MS)
    # 防御机制:15秒后如果未进入PSM则重启
    await sys.wait(15000)
    log.info("进入PSM+失败,重启")
    board.reset()  # rtos.reboot()


sys.taskInit(psm_fota_task_func)
sys.run()
