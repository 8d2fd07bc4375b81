/* log.h: the error log (stderr, with levels). */
#ifndef QPROXY_LOG_H
#define QPROXY_LOG_H

#include <stdarg.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

#define QP_PRINTF(a, b) __attribute__((format(printf, a, b)))

void	log_init(int level);
void	log_setlevel(int level);
int	log_getlevel(void);
/* Parses "error", "warn", "info", "debug"; -1 when unknown. */
int	log_level_parse(const char *);
const char *log_level_name(int);

/* log_warn and log_err append strerror(errno); the x variants do not. */
void	log_err(const char *, ...) QP_PRINTF(1, 2);
void	log_errx(const char *, ...) QP_PRINTF(1, 2);
void	log_warn(const char *, ...) QP_PRINTF(1, 2);
void	log_warnx(const char *, ...) QP_PRINTF(1, 2);
void	log_info(const char *, ...) QP_PRINTF(1, 2);
void	log_debug(const char *, ...) QP_PRINTF(1, 2);
/* Start-up only: log and exit(1). */
void	fatal(const char *, ...) QP_PRINTF(1, 2) __attribute__((noreturn));
void	fatalx(const char *, ...) QP_PRINTF(1, 2) __attribute__((noreturn));

#define log_debug_enabled() (log_getlevel() >= LOG_LEVEL_DEBUG)

#endif
