"""Generated sample data for the demo: Luoyang enterprises, valid credit codes, dates around holidays.

Nothing here is hand-written record by record: a seeded generator makes enterprise names, legal
representatives, unified social credit codes with Luoyang region codes (retired ones included —
a credit code never changes), and event dates that cluster around Chinese public holidays, the
way real office backlogs do. A small share of rows is deliberately wrong, so every view of the
system has rejections to show.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from ..protocol.codes import USCC_ALPHABET, make_uscc

# GB/T 2260 codes under 洛阳市 (410300); 410306 吉利区, 410322 孟津县 and 410381 偃师市 were retired
# in 2021 but stay in every credit code issued before
LUOYANG_REGIONS = {
    "410302": "老城区", "410303": "西工区", "410304": "瀍河回族区", "410305": "涧西区", "410306": "吉利区",
    "410307": "偃师区", "410308": "孟津区", "410311": "洛龙区", "410322": "孟津县", "410323": "新安县",
    "410324": "栾川县", "410325": "嵩县", "410326": "汝阳县", "410327": "宜阳县", "410328": "洛宁县",
    "410329": "伊川县", "410381": "偃师市",
}
RETIRED_REGIONS = ("410306", "410322", "410381")
TRADE_NAMES = ["鼎盛", "华夏", "中原", "牡丹", "龙门", "河洛", "汇通", "宏达", "天瑞", "金源", "瑞丰", "恒信", "博远",
               "九州", "隋唐", "伊洛", "嵩岳", "新科", "正阳", "同德", "洛浦", "天堂", "明堂", "白马", "关林", "周王",
               "定鼎", "应天", "丽景", "青要"]
INDUSTRIES = ["商贸", "科技", "建材", "食品", "餐饮管理", "汽车销售", "物流", "医药连锁", "农业开发", "文化传媒",
              "机械制造", "矿业", "新能源", "电子商务", "旅游开发", "钢结构工程", "轴承", "耐火材料", "牡丹文化"]
SUFFIXES = ["有限公司", "有限公司", "有限责任公司", "股份有限公司"]
SHOPS = ["烩面馆", "水席馆", "不翻汤", "便利店", "五金店", "理发店", "药店", "服装店", "家电维修部", "粮油店"]
SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英建华志红玉兰晓东海燕俊峰"
STREETS = ["中州中路", "九都路", "凯旋路", "定鼎北路", "王城大道", "开元大道", "建设路", "涧河路", "西苑路", "龙门大道"]
AUTHORITIES = {
    "amr": ("洛阳市市场监督管理局", "11410300005181234"),
    "fda": ("洛阳市食品药品监督管理局", "11410300005187654"),
    "tax": ("国家税务总局洛阳市税务局", "11410300MB1234567"),
    "court": ("河南省洛阳市中级人民法院", "11410300005180000"),
}
ENTERPRISE_TYPES = ["有限责任公司（自然人投资或控股）", "有限责任公司（自然人独资）", "股份有限公司（非上市）",
                    "个人独资企业", "有限责任公司（国有独资）"]
VIOLATIONS = [("虚假宣传", "在其网店发布虚假广告，宣称产品具有治疗作用", "《中华人民共和国广告法》第五十五条"),
              ("无照经营", "未取得营业执照擅自从事经营活动", "《无证无照经营查处办法》第十三条"),
              ("销售过期食品", "销售超过保质期的预包装食品", "《中华人民共和国食品安全法》第一百二十四条"),
              ("计量违法", "使用未经检定的电子计价秤", "《中华人民共和国计量法实施细则》第四十三条"),
              ("商标侵权", "销售侵犯注册商标专用权的商品", "《中华人民共和国商标法》第六十条")]
PENALTY_CODES = {"01": "警告", "02": "罚款", "03": "没收违法所得", "04": "责令停产停业", "05": "吊销许可证件"}
JUDICIAL_KINDS = ["失信被执行人", "股权冻结", "判决裁定", "股东变更协助执行"]


def make_id_number(rng: random.Random, region: str, birth_year: int) -> str:
    """A resident ID number of the right form (GB 11643: region, birth date, sequence, ISO 7064 check)."""
    body = f"{region}{birth_year:04d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    total = sum(int(c) * (2 ** (17 - i) % 11) for i, c in enumerate(body))
    return body + "10X98765432"[total % 11]


def authority_uscc(dept: str) -> str:
    """A valid credit code for a demo authority (registration class 1 1: a government body)."""
    return make_uscc("1", "1", "410300", AUTHORITIES[dept][1][-8:])


@dataclass
class Enterprise:
    name: str
    uscc: str
    org_code: str
    legal_rep: str
    region: str
    address: str
    category: str  # legal_person or individual_business
    established: date


class SampleData:
    """A seeded generator: the same seed gives the same enterprises, so reruns stay consistent."""

    def __init__(self, seed: int = 2016, today: date | None = None):
        self.rng = random.Random(seed)
        self.today = today or date.today()
        self.enterprises: list[Enterprise] = []
        self._holidays = self._holiday_dates()

    # -- people, places, codes ------------------------------------------------------------

    def person(self) -> str:
        return self.rng.choice(SURNAMES) + "".join(self.rng.choice(GIVEN) for _ in range(self.rng.choice((1, 2))))

    def region(self) -> str:
        if self.rng.random() < 0.15:
            return self.rng.choice(RETIRED_REGIONS)
        return self.rng.choice(list(LUOYANG_REGIONS))

    def org8(self) -> str:
        alphabet = USCC_ALPHABET if self.rng.random() < 0.3 else "0123456789"
        head = "MA" if alphabet == USCC_ALPHABET else ""
        return head + "".join(self.rng.choice(alphabet) for _ in range(8 - len(head)))

    def enterprise(self) -> Enterprise:
        region = self.region()
        individual = self.rng.random() < 0.2
        rep = self.person()
        if individual:
            name = f"{LUOYANG_REGIONS[region]}{rep[0]}记{self.rng.choice(SHOPS)}"
            code = make_uscc("9", "2", region, self.org8())
        else:
            name = (f"洛阳{self.rng.choice(TRADE_NAMES)}{self.rng.choice(TRADE_NAMES)}"
                    f"{self.rng.choice(INDUSTRIES)}{self.rng.choice(SUFFIXES)}")
            code = make_uscc("9", "1", region, self.org8())
        address = (f"河南省洛阳市{LUOYANG_REGIONS[region]}{self.rng.choice(STREETS)}"
                   f"{self.rng.randint(1, 300)}号")
        established = self.today - timedelta(days=self.rng.randint(200, 6000))
        ent = Enterprise(name, code, code[8:17], rep, region, address,
                         "individual_business" if individual else "legal_person", established)
        self.enterprises.append(ent)
        return ent

    def known_enterprise(self) -> Enterprise:
        if not self.enterprises or self.rng.random() < 0.1:  # now and then one the registry has not sent yet
            return self.enterprise()
        return self.rng.choice(self.enterprises)

    # -- dates ----------------------------------------------------------------------------

    def _holiday_dates(self) -> list[date]:
        try:
            import chinese_calendar

            start = self.today - timedelta(days=400)
            return [d for d in chinese_calendar.get_holidays(start, self.today, include_weekends=False)]
        except (ImportError, NotImplementedError):
            return []

    def event_date(self, max_age_days: int = 60, min_age_days: int = 0) -> date:
        """A past date; often just before or after a public holiday, when offices clear backlogs."""
        near = [h for h in self._holidays if min_age_days <= (self.today - h).days <= max_age_days]
        if near and self.rng.random() < 0.5:
            day = self.rng.choice(near) + timedelta(days=self.rng.choice((-3, -2, -1, 1, 2, 3, 4)))
        else:
            day = self.today - timedelta(days=self.rng.randint(min_age_days, max_age_days))
        # within [max_age_days, min_age_days] ago: the timeliness each sample department shows depends on it
        return min(max(day, self.today - timedelta(days=max_age_days)), self.today - timedelta(days=min_age_days))

    @staticmethod
    def as_source_date(day: date, style: int) -> str:
        """The date forms source systems really write."""
        return [day.isoformat(), f"{day.year}/{day.month}/{day.day}", day.strftime("%Y%m%d"),
                f"{day.year}年{day.month}月{day.day}日"][style % 4]

    # -- deliberate mistakes --------------------------------------------------------------

    def corrupt_code(self, code: str) -> str:
        """A credit code with a wrong check character, the most common keying error."""
        wrong = [c for c in USCC_ALPHABET if c != code[-1]]
        return code[:-1] + self.rng.choice(wrong)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


def now_text() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
