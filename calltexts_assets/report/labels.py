"""Every word the cost report shows a reader, in Russian (the default) and English.

The report speaks one language (CALLTEXTS_LANGUAGE): directions, statuses, checks and their
details are named in it, never by their identifiers (`incoming_redirected`, `missing_audio`,
`duration_variance`), which stay in the registry CSV's machine columns. Setting names a
reader must type (`STT_ROLE_MODE=turns`) and the ledger's error codes and messages (quoted
as the registry has them, to be looked up there) are the exceptions.

Pure tables and functions: `report_words(language)` is all data.py, markdown.py and pdf.py
need.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from calltexts_assets.clients.languages import language_name
from calltexts_assets.clients.model_lifecycle import REFUSE, WARN, ModelNotice
from calltexts_assets.quality.checks import CheckOutcome
from calltexts_assets.state.ledger import DIRECTION_WORDS

LANGUAGES = ("ru", "en")
DEFAULT_LANGUAGE = "ru"

# Call.direction (listing/calls.py CALL_TYPES): the ledger's words, which the transcript
# header uses too (one source, where both packages may read it).
DIRECTIONS = DIRECTION_WORDS

# state.ledger.Status
STATUSES = {
    "ru": {
        "listed": "в списке, не скачан", "no_recording": "нет записи в Bitrix24",
        "downloaded": "скачан, не расшифрован", "missing_audio": "запись не найдена",
        "download_error": "ошибка скачивания", "transcribed": "расшифрован",
        "transcription_error": "ошибка расшифровки", "invalid": "отклонён",
        "needs_review": "требует проверки человеком",
        "no_speech": "без речи (в STT не отправлялся)",
    },
    "en": {
        "listed": "listed, not downloaded", "no_recording": "no recording in Bitrix24",
        "downloaded": "downloaded, not transcribed", "missing_audio": "recording not found",
        "download_error": "download error", "transcribed": "transcribed",
        "transcription_error": "transcription error", "invalid": "rejected",
        "needs_review": "needs review by a person",
        "no_speech": "no speech (nothing sent to the STT)",
    },
}  # fmt: skip

# quality.checks / quality.duplicates CheckOutcome.name
CHECKS = {
    "ru": {
        "duration_variance": "Длительность против Bitrix24",
        "stt_durations": "Длительность по ответу STT",
        "coverage": "Покрытие расшифровкой",
        "duplicate_transcripts": "Повторные расшифровки",
        "cost_matches": "Стоимость по счёту",
        "registry_complete": "Полнота реестра",
        "qa_sample": "Выборка для контроля качества",
    },
    "en": {
        "duration_variance": "Duration against Bitrix24",
        "stt_durations": "Duration the STT reported",
        "coverage": "Transcription coverage",
        "duplicate_transcripts": "Duplicate transcripts",
        "cost_matches": "Cost against the bill",
        "registry_complete": "Registry completeness",
        "qa_sample": "QA sample",
    },
}

STATES = {
    "ru": {"ok": "OK", "warn": "предупреждение", "fail": "ОШИБКА"},
    "en": {"ok": "OK", "warn": "warning", "fail": "FAILED"},
}

# transcripts.second_opinion's doubt signals (the ledger's `doubts`)
DOUBTS = {
    "ru": {
        "low_logprob": "низкая уверенность модели", "repetition": "повторы в тексте",
        "word_rate": "неправдоподобный темп слов", "unheard_speech": "речь без текста",
        "language": "другой язык", "fallback_failed": "второе мнение не получено",
    },
    "en": {
        "low_logprob": "low model confidence", "repetition": "repeated text",
        "word_rate": "implausible word rate", "unheard_speech": "speech without text",
        "language": "another language", "fallback_failed": "no second opinion",
    },
}  # fmt: skip

# Transcript.roles: how the speakers were told apart (report/stt.py)
HOW_ROLES = {
    "ru": {
        "energy": "по каналам записи (одна отправка)",
        "turns": "по репликам каждого канала (только речь)",
        "per_channel": "каждый канал отдельно (двойная оплата)",
        "diarized": "разделение говорящих моделью STT",
        "mono": "одноканальная запись",
        "none": "не определены (STT без времени слов)",
    },
    "en": {
        "energy": "by recording channel (one pass)",
        "turns": "by each channel's turns (speech only)",
        "per_channel": "each channel on its own (billed twice)",
        "diarized": "speakers told apart by the STT model",
        "mono": "single-channel recording",
        "none": "not determined (STT without word times)",
    },
}

# billing.cost units
UNITS = {
    "ru": {"second": "посекундно", "minute": "поминутно на запрос"},
    "en": {"second": "per second", "minute": "per started minute of each request"},
}

# The rest: headings, table columns, row labels and sentences (str.format fields).
TEXT: dict[str, dict[str, str]] = {
    "ru": {
        "title": "Отчёт по выгрузке звонков за {period}",
        "sandbox_title": "ПЕСОЧНИЦА: {title}",
        "sandbox_note": "Песочница: отчёт построен на синтетических данных эмуляторов Bitrix24 "
        "и STT; цифры не относятся к реальному порталу.",
        "period": "Период",
        "indicator": "Показатель", "value": "Значение",
        "by_day": "По дням", "day": "День", "calls": "Звонков", "transcribed": "Расшифровано",
        "billable_minutes": "Минут к оплате", "cost_usd": "Стоимость, USD",
        "by_direction": "По направлениям", "direction": "Направление",
        "by_status": "По статусам", "status": "Статус",
        "by_employee": "По сотрудникам", "employee": "Сотрудник",
        "by_line": "По линиям", "line": "Линия",
        "talk_minutes": "Минут разговора", "not_connected": "Не состоялись",
        "without_recording": "Без записи",
        "calls_per_day": "Звонков в день", "minutes_per_day": "Минут к оплате в день",
        "peak": "макс. {peak}",
        "warnings": "Предупреждения", "attention": "Внимание",
        "checks": "Проверки качества", "check": "Проверка", "outcome": "Итог",
        "details": "Подробности", "no_checks": "Результаты проверок не переданы.",
        "exceptions": "Исключения ({total})", "call": "Звонок", "started": "Начало",
        "error_code": "Код ошибки", "message": "Сообщение",
        "more_exceptions": "... и ещё {more}: см. реестр CSV.",
        "no_exceptions": "Нет: все звонки расшифрованы.",
        "recommendations": "Рекомендации",
        # sections
        "s_calls": "Звонки", "s_duration": "Длительность", "s_cost": "Стоимость",
        "s_stt": "Распознавание (STT)", "s_forecast": "Прогноз и бюджет", "s_run": "Выполнение",
        "calls_total": "Всего звонков", "with_audio": "С доступной записью",
        "errors": "Ошибки (скачивания, расшифровки, отклонённые)",
        "pending": "Не завершено (не скачаны или не расшифрованы)",
        "coverage": "Покрытие расшифровкой", "no_audio_coverage": "— (нет звонков с записью)",
        "bitrix24_all": "По Bitrix24, все звонки",
        "transcribed_audio": "Фактически расшифровано",
        "billed": "К оплате по счёту ({unit})",
        "formula": "По формуле требований (мин. с округлением вверх)",
        "variance": "Расхождение с Bitrix24", "variance_value": "{value} (порог {limit})",
        "tariff": "Тариф", "tariff_value": "{price} USD/мин, курс {rate} RUB/USD",
        "cost_rub": "Стоимость, RUB", "formula_cost": "По формуле требований",
        "minutes": "{minutes:.1f} мин ({hours:.2f} ч)",
        "whole_minutes": "{minutes} мин ({hours:.2f} ч)", "just_minutes": "{minutes} мин",
        "fc_calls": "Прогноз: звонков с записью", "fc_billed": "Прогноз: к оплате по счёту",
        "fc_formula": "Прогноз: по формуле требований", "fc_cost": "Прогноз: стоимость",
        "fc_delta": "Факт относительно прогноза", "forecast": "Прогноз",
        "not_given": "не передан", "budget": "Бюджет", "no_budget": "не задан",
        "run_time": "Время выполнения",
        "work_time": "Время выполнения (запуски, сделавшие работу периода: {runs})",
        "this_run": "Время этого запуска",
        "stt_requests": "Запросов к STT (с повторами)",
        "billed_requests": "Оплачиваемых запросов",
        "sent": "Минут отправлено на STT / минут звонков",
        "sent_value": "{minutes:.1f} мин / {call_minutes:.1f} мин звонков ({ratio:.2f})",
        "no_speech": "Без речи (не отправлены, 0 к оплате)",
        "second_opinions": "Второе мнение (WHISPER_FALLBACK_MODEL), его ответ оставлен",
        "fallback_billed": "Второе мнение к оплате (входит в счёт выше)",
        "fallback_billed_value": "запросов: {requests}, {minutes:.1f} мин",
        "needs_review": "Требуют проверки человеком",
        "doubts": "сомнения: {doubts}",
        "fallback_kept": "второе мнение {model}: оставлено",
        "fallback_dropped": "второе мнение {model}: не оставлено",
        "roles": "Роли собеседников", "hallucinations": "Отброшено как галлюцинации STT",
        "languages": "Языки",
        # warnings
        "w_over_forecast": "Фактическая стоимость {cost} USD выше прогноза {forecast} USD на "
        "{delta} (порог +{limit} %).",
        "w_over_budget": "Бюджет превышен: {cost} USD при бюджете {budget} USD.",
        "w_forecast_over_budget": "Прогноз {forecast} USD превышал бюджет {budget} USD.",
        "w_per_channel": "Звонков, распознанных по каналам отдельно (STT_ROLE_MODE=per_channel): "
        "{n}. Обе стороны каждого такого звонка отправлены и оплачены отдельно: их стоимость "
        "вдвое выше одной отправки.",
        "w_model_shut": "{setting}={model}: модель отключена {date} (GET /v1/models){instead}.",
        "w_model_shuts": "{setting}={model}: модель отключается {date}, через {days} дн. "
        "(GET /v1/models){instead}.",
        "w_model_instead": "; задайте {setting}={replacement}",
        # recommendations
        "r_missing_audio": "Записи не найдены по ссылке (404/410), звонков: {n}. Проверьте в "
        "Bitrix24 настройки записи разговоров и срок хранения записей.",
        "r_not_recorded": "Состоявшиеся звонки без записи в Bitrix24, звонков: {n}. Проверьте, "
        "включена ли запись разговоров для всех линий и сотрудников.",
        "r_retryable": "Ошибки скачивания или расшифровки, звонков: {n}. Запустите выгрузку за "
        "период повторно: обработка продолжится с шага, где произошёл сбой.",
        "r_invalid": "Отклонённые строки статистики Bitrix24, звонков: {n}. Причина в сообщении "
        "об ошибке в реестре (error_message); проверьте эти звонки в Bitrix24.",
        "r_pending": "Обработаны не до конца (не скачаны или не расшифрованы), звонков: {n}. "
        "Материализуйте период ещё раз.",
        "r_variance": "Длительность аудио расходится с Bitrix24 на {value}: проверьте, не "
        "обрезаны ли скачанные записи, и перекачайте звонки из проверки «{check}».",
        "r_over_forecast": "Стоимость заметно выше прогноза: сверьте тариф модели распознавания "
        "и длительности звонков.",
        "r_over_budget": "Бюджет превышен: увеличьте бюджет или выгружайте период частями.",
        "r_check_failed": "Проверка «{check}» не пройдена: {summary}.",
        "r_no_calls": "За период не найдено ни одного звонка: это не успех выгрузки, а повод "
        "проверить права вебхука (scope telephony), период и часовой пояс портала "
        "(CALLTEXTS_TIMEZONE), а также есть ли звонки за эти дни в Bitrix24.",
        "r_no_audio": "Звонков {n}, но ни у одного нет записи: проверьте, включена ли запись "
        "разговоров в Bitrix24 и есть ли у вебхука scope disk.",
        "r_no_roles": "Стереозаписи без ролей, звонков: {n}: сервер STT не вернул время слов. "
        "Выберите STT_ROLE_MODE=turns (реплики каждого канала отдельно, оплачивается только "
        "речь) или модель с временем слов.",
        "r_nothing": "Действий не требуется.",
        # check details
        "c_duration_variance": "аудио {measured:.1f} с против {expected:.0f} с по Bitrix24, "
        "звонков: {calls}: {value} (порог {limit})",
        "c_stt_durations": "звонков с длительностью в ответе STT, отличной от отправленного "
        "аудио: {n} из {checked}",
        "c_coverage": "расшифровано {done} из {with_audio} звонков с записью: {value} "
        "(требуется {limit}, предупреждение от {warn})",
        "c_no_calls": "за период нет ни одного звонка: проверьте права вебхука (scope "
        "telephony), период и часовой пояс портала (CALLTEXTS_TIMEZONE)",
        "c_no_audio": "звонков {calls}, но ни у одного нет записи: проверьте, включена ли запись "
        "разговоров в Bitrix24 и scope disk вебхука",
        "c_duplicate_transcripts": "расшифровано дважды: {twice}, с несколькими файлами "
        "расшифровки: {files}, путей расшифровки на несколько звонков: {shared}",
        "c_cost_matches": "звонков со стоимостью не по счёту: {n} из {checked} ({unit}, "
        "{price} USD/мин)",
        "c_registry_complete": "замечаний к реестру CSV: {n}",
        "c_calls_off": "звонков с расхождением: {n}",
    },
    "en": {
        "title": "Call export report for {period}",
        "sandbox_title": "SANDBOX: {title}",
        "sandbox_note": "Sandbox: this report is built from synthetic data of the Bitrix24 and "
        "STT emulators; its figures are not those of a real portal.",
        "period": "Period",
        "indicator": "Indicator", "value": "Value",
        "by_day": "By day", "day": "Day", "calls": "Calls", "transcribed": "Transcribed",
        "billable_minutes": "Billable minutes", "cost_usd": "Cost, USD",
        "by_direction": "By direction", "direction": "Direction",
        "by_status": "By status", "status": "Status",
        "by_employee": "By employee", "employee": "Employee",
        "by_line": "By line", "line": "Line",
        "talk_minutes": "Talk minutes", "not_connected": "Not connected",
        "without_recording": "No recording",
        "calls_per_day": "Calls per day", "minutes_per_day": "Billable minutes per day",
        "peak": "max {peak}",
        "warnings": "Warnings", "attention": "Attention",
        "checks": "Quality checks", "check": "Check", "outcome": "Outcome",
        "details": "Details", "no_checks": "No check results were given.",
        "exceptions": "Exceptions ({total})", "call": "Call", "started": "Started",
        "error_code": "Error code", "message": "Message",
        "more_exceptions": "... and {more} more: see the registry CSV.",
        "no_exceptions": "None: every call was transcribed.",
        "recommendations": "Recommendations",
        "s_calls": "Calls", "s_duration": "Duration", "s_cost": "Cost",
        "s_stt": "Speech to text (STT)", "s_forecast": "Forecast and budget", "s_run": "Run",
        "calls_total": "Calls in all", "with_audio": "With a recording",
        "errors": "Errors (download, transcription, rejected)",
        "pending": "Unfinished (not downloaded or not transcribed)",
        "coverage": "Transcription coverage", "no_audio_coverage": "— (no call with a recording)",
        "bitrix24_all": "By Bitrix24, all calls",
        "transcribed_audio": "Actually transcribed",
        "billed": "Billed ({unit})",
        "formula": "By the requirements' formula (minutes rounded up)",
        "variance": "Difference from Bitrix24", "variance_value": "{value} (limit {limit})",
        "tariff": "Tariff", "tariff_value": "{price} USD/min, rate {rate} RUB/USD",
        "cost_rub": "Cost, RUB", "formula_cost": "By the requirements' formula",
        "minutes": "{minutes:.1f} min ({hours:.2f} h)",
        "whole_minutes": "{minutes} min ({hours:.2f} h)", "just_minutes": "{minutes} min",
        "fc_calls": "Forecast: calls with a recording", "fc_billed": "Forecast: billed",
        "fc_formula": "Forecast: by the requirements' formula", "fc_cost": "Forecast: cost",
        "fc_delta": "Actual against forecast", "forecast": "Forecast",
        "not_given": "not given", "budget": "Budget", "no_budget": "not set",
        "run_time": "Run time",
        "work_time": "Run time (runs that did the period's work: {runs})",
        "this_run": "This run's time",
        "stt_requests": "STT requests (retries included)",
        "billed_requests": "Billed requests",
        "sent": "Minutes sent to the STT / minutes of calls",
        "sent_value": "{minutes:.1f} min / {call_minutes:.1f} min of calls ({ratio:.2f})",
        "no_speech": "Without speech (not sent, billed 0)",
        "second_opinions": "Second opinions (WHISPER_FALLBACK_MODEL), their answer kept",
        "fallback_billed": "Second opinions billed (part of the bill above)",
        "fallback_billed_value": "requests: {requests}, {minutes:.1f} min",
        "needs_review": "Need review by a person",
        "doubts": "doubts: {doubts}",
        "fallback_kept": "second opinion {model}: kept",
        "fallback_dropped": "second opinion {model}: not kept",
        "roles": "Speaker roles", "hallucinations": "Dropped as STT hallucinations",
        "languages": "Languages",
        "w_over_forecast": "The actual cost {cost} USD is {delta} over the forecast "
        "{forecast} USD (limit +{limit} %).",
        "w_over_budget": "Budget exceeded: {cost} USD against a budget of {budget} USD.",
        "w_forecast_over_budget": "The forecast {forecast} USD exceeded the budget {budget} USD.",
        "w_per_channel": "Calls transcribed channel by channel (STT_ROLE_MODE=per_channel): "
        "{n}. Both sides of each such call were sent and billed on their own: they cost twice "
        "one pass.",
        "w_model_shut": "{setting}={model}: the model was shut down on {date} "
        "(GET /v1/models){instead}.",
        "w_model_shuts": "{setting}={model}: the model shuts down on {date}, in {days} days "
        "(GET /v1/models){instead}.",
        "w_model_instead": "; set {setting}={replacement}",
        "r_missing_audio": "Recordings not found at their link (404/410), calls: {n}. Check "
        "Bitrix24's call recording settings and how long recordings are kept.",
        "r_not_recorded": "Answered calls without a recording in Bitrix24, calls: {n}. Check "
        "that call recording is on for every line and employee.",
        "r_retryable": "Download or transcription errors, calls: {n}. Run the period's export "
        "again: it resumes at the step that failed.",
        "r_invalid": "Rejected Bitrix24 statistic rows, calls: {n}. The reason is in the "
        "registry's error message (error_message); check these calls in Bitrix24.",
        "r_pending": "Not fully processed (not downloaded or not transcribed), calls: {n}. "
        "Materialize the period again.",
        "r_variance": "The audio's duration differs from Bitrix24's by {value}: check that the "
        "downloaded recordings are not cut short, and download the calls of the check "
        "“{check}” again.",
        "r_over_forecast": "The cost is well over the forecast: check the STT model's tariff "
        "and the calls' durations.",
        "r_over_budget": "Budget exceeded: raise the budget or export the period in parts.",
        "r_check_failed": "Check “{check}” failed: {summary}.",
        "r_no_calls": "No call was found for the period: not a successful export, but a reason "
        "to check the webhook's rights (scope telephony), the period and the portal's time "
        "zone (CALLTEXTS_TIMEZONE), and whether Bitrix24 has calls on these days.",
        "r_no_audio": "{n} calls, but none has a recording: check that call recording is on in "
        "Bitrix24 and that the webhook has the disk scope.",
        "r_no_roles": "Stereo recordings without roles, calls: {n}: the STT server returned no "
        "word times. Choose STT_ROLE_MODE=turns (each channel's turns on their own, only "
        "speech billed) or a model with word times.",
        "r_nothing": "No action needed.",
        "c_duration_variance": "audio {measured:.1f} s against Bitrix24's {expected:.0f} s over "
        "{calls} calls: {value} (limit {limit})",
        "c_stt_durations": "calls whose STT answer reported a length other than the audio sent: "
        "{n} of {checked}",
        "c_coverage": "{done} of {with_audio} calls with a recording transcribed: {value} "
        "(required {limit}, warning from {warn})",
        "c_no_calls": "no call in the period: check the webhook's rights (scope telephony), the "
        "period and the portal's time zone (CALLTEXTS_TIMEZONE)",
        "c_no_audio": "{calls} calls, but none has a recording: check that call recording is on "
        "in Bitrix24 and the webhook's disk scope",
        "c_duplicate_transcripts": "transcribed twice: {twice}, with several transcript files: "
        "{files}, transcript paths shared by several calls: {shared}",
        "c_cost_matches": "calls whose cost is not the bill: {n} of {checked} ({unit}, "
        "{price} USD/min)",
        "c_registry_complete": "problems in the registry CSV: {n}",
        "c_calls_off": "calls off: {n}",
    },
}  # fmt: skip


def pct(fraction: float) -> str:
    return f"{fraction * 100:.2f} %"


@dataclass(frozen=True)
class ReportWords:
    """The report's words in one language."""

    language: str

    def __call__(self, key: str, **fields: Any) -> str:
        text = TEXT[self.language][key]
        return text.format(**fields) if fields else text

    def direction(self, code: str) -> str:
        return DIRECTIONS[self.language].get(code, code)

    def status(self, code: str) -> str:
        return STATUSES[self.language].get(code, code)

    def check(self, name: str) -> str:
        return CHECKS[self.language].get(name, name)

    def state(self, state: str) -> str:
        return STATES[self.language][state]

    def roles(self, how: str) -> str:
        return HOW_ROLES[self.language].get(how, how)

    def doubts(self, signals: str) -> str:
        """The ledger's comma-separated doubt signals, in words."""
        named = [DOUBTS[self.language].get(s, s) for s in signals.split(",") if s]
        return ", ".join(named) or "—"

    def unit(self, unit: str) -> str:
        return UNITS[self.language].get(unit, unit)

    def language_name(self, code: str) -> str:
        return language_name(code, self.language)

    def model_notice(self, found: ModelNotice) -> str:
        """A configured model's shutdown ("" when there is nothing to say)."""
        instead = (
            self("w_model_instead", setting=found.setting, replacement=found.replacement)
            if found.replacement
            else ""
        )
        named = {"setting": found.setting, "model": found.model, "date": found.shutdown}
        if found.status == REFUSE:
            return self("w_model_shut", **named, instead=instead)
        if found.status == WARN:
            return self("w_model_shuts", **named, days=found.days_left, instead=instead)
        return ""

    def check_summary(self, outcome: CheckOutcome) -> str:
        """A check's details in the report's language, from its figures (the outcome's own
        `summary` is English, for the Dagster UI and the engineers who read it)."""
        d: Mapping[str, Any] = outcome.details
        name, value, limit = outcome.name, pct(outcome.value), pct(outcome.threshold)
        if name == "duration_variance" and "calls_measured" in d:
            return self(
                "c_duration_variance",
                measured=d.get("measured_seconds", 0.0),
                expected=d.get("bitrix24_seconds", 0.0),
                calls=d.get("calls_measured", 0),
                value=value,
                limit=limit,
            )
        if name == "stt_durations" and "checked_calls" in d:
            return self("c_stt_durations", n=int(outcome.value), checked=d.get("checked_calls", 0))
        if name == "coverage" and "calls_with_audio" in d:
            if not d.get("calls_with_audio"):
                calls = d.get("calls", 0)
                return self("c_no_audio", calls=calls) if calls else self("c_no_calls")
            return self(
                "c_coverage",
                done=d.get("transcribed", 0),
                with_audio=d["calls_with_audio"],
                value=value,
                limit=limit,
                warn=pct(d.get("warn_threshold", outcome.threshold)),
            )
        if name == "duplicate_transcripts" and "same_call_total" in d:
            return self(
                "c_duplicate_transcripts",
                twice=d["same_call_total"],
                files=d["two_files_total"],
                shared=d["shared_paths_total"],
            )
        if name == "cost_matches" and "checked_calls" in d:
            return self(
                "c_cost_matches",
                n=int(outcome.value),
                checked=d.get("checked_calls", 0),
                unit=self.unit(d.get("billing_unit", "")),
                price=d.get("price_per_minute_usd", 0.0),
            )
        if name == "registry_complete":
            return self("c_registry_complete", n=int(outcome.value))
        # a check (or an outcome without its figures) with no sentence here: how many calls it
        # found, never its English text
        return self("c_calls_off", n=outcome.offending_calls or int(outcome.value))


def report_words(language: str = DEFAULT_LANGUAGE) -> ReportWords:
    if language not in LANGUAGES:
        raise ValueError(f"report language {language!r}: expected one of {', '.join(LANGUAGES)}")
    return ReportWords(language)
