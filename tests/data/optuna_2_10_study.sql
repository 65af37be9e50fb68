-- An Optuna 2.10.1 SQLite study as hydra-optuna-sweeper 1.3.0 leaves it (schema v2.6.0.a):
-- 'sphere', minimize, params x (float), y (int), opt (categorical); 4 COMPLETE, 1 FAIL, 1 RUNNING.
-- Made with optuna==2.10.1 + sqlalchemy<2 (create_study/ask/tell), dumped with sqlite3 .dump.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE studies (
	study_id INTEGER NOT NULL, 
	study_name VARCHAR(512) NOT NULL, 
	PRIMARY KEY (study_id)
);
INSERT INTO studies VALUES(1,'sphere');
CREATE TABLE version_info (
	version_info_id INTEGER NOT NULL, 
	schema_version INTEGER, 
	library_version VARCHAR(256), 
	PRIMARY KEY (version_info_id), 
	CHECK (version_info_id=1)
);
INSERT INTO version_info VALUES(1,12,'2.10.1');
CREATE TABLE study_directions (
	study_direction_id INTEGER NOT NULL, 
	direction VARCHAR(8) NOT NULL, 
	study_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	PRIMARY KEY (study_direction_id), 
	UNIQUE (study_id, objective), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO study_directions VALUES(1,'MINIMIZE',1,0);
CREATE TABLE study_user_attributes (
	study_user_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_user_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE study_system_attributes (
	study_system_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_system_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE trials (
	trial_id INTEGER NOT NULL, 
	number INTEGER, 
	study_id INTEGER, 
	state VARCHAR(8) NOT NULL, 
	datetime_start DATETIME, 
	datetime_complete DATETIME, 
	PRIMARY KEY (trial_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO trials VALUES(1,0,1,'COMPLETE','2026-12-07 12:35:52.302244','2026-12-07 12:35:52.627016');
INSERT INTO trials VALUES(2,1,1,'COMPLETE','2026-12-07 12:35:52.803425','2026-12-07 12:35:52.980030');
INSERT INTO trials VALUES(3,2,1,'COMPLETE','2026-12-07 12:35:53.001457','2026-12-07 12:35:53.234476');
INSERT INTO trials VALUES(4,3,1,'COMPLETE','2026-12-07 12:35:53.330184','2026-12-07 12:35:53.443579');
INSERT INTO trials VALUES(5,4,1,'FAIL','2026-12-07 12:35:53.474050','2026-12-07 12:35:53.853386');
INSERT INTO trials VALUES(6,5,1,'RUNNING','2026-12-07 12:35:53.886992',NULL);
CREATE TABLE trial_user_attributes (
	trial_user_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_user_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_system_attributes (
	trial_system_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_system_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_params (
	param_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	param_name VARCHAR(512), 
	param_value FLOAT, 
	distribution_json TEXT, 
	PRIMARY KEY (param_id), 
	UNIQUE (trial_id, param_name), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO trial_params VALUES(1,1,'x',0.48813503927324752851,'{"name": "UniformDistribution", "attributes": {"low": -5.0, "high": 5.0}}');
INSERT INTO trial_params VALUES(2,1,'y',2.0,'{"name": "IntUniformDistribution", "attributes": {"low": -5, "high": 5, "step": 1}}');
INSERT INTO trial_params VALUES(3,1,'opt',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["adam", "sgd"]}}');
INSERT INTO trial_params VALUES(4,2,'x',-0.76345200661095269367,'{"name": "UniformDistribution", "attributes": {"low": -5.0, "high": 5.0}}');
INSERT INTO trial_params VALUES(5,2,'y',2.0,'{"name": "IntUniformDistribution", "attributes": {"low": -5, "high": 5, "step": 1}}');
INSERT INTO trial_params VALUES(6,2,'opt',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["adam", "sgd"]}}');
INSERT INTO trial_params VALUES(7,3,'x',4.6366276050102932515,'{"name": "UniformDistribution", "attributes": {"low": -5.0, "high": 5.0}}');
INSERT INTO trial_params VALUES(8,3,'y',-1.0,'{"name": "IntUniformDistribution", "attributes": {"low": -5, "high": 5, "step": 1}}');
INSERT INTO trial_params VALUES(9,3,'opt',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["adam", "sgd"]}}');
INSERT INTO trial_params VALUES(10,4,'x',0.68044561093932287576,'{"name": "UniformDistribution", "attributes": {"low": -5.0, "high": 5.0}}');
INSERT INTO trial_params VALUES(11,4,'y',5.0,'{"name": "IntUniformDistribution", "attributes": {"low": -5, "high": 5, "step": 1}}');
INSERT INTO trial_params VALUES(12,4,'opt',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["adam", "sgd"]}}');
INSERT INTO trial_params VALUES(13,5,'x',-4.797816025596742584,'{"name": "UniformDistribution", "attributes": {"low": -5.0, "high": 5.0}}');
INSERT INTO trial_params VALUES(14,5,'y',4.0,'{"name": "IntUniformDistribution", "attributes": {"low": -5, "high": 5, "step": 1}}');
INSERT INTO trial_params VALUES(15,5,'opt',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["adam", "sgd"]}}');
INSERT INTO trial_params VALUES(16,6,'x',4.7861834223276407129,'{"name": "UniformDistribution", "attributes": {"low": -5.0, "high": 5.0}}');
INSERT INTO trial_params VALUES(17,6,'y',3.0,'{"name": "IntUniformDistribution", "attributes": {"low": -5, "high": 5, "step": 1}}');
INSERT INTO trial_params VALUES(18,6,'opt',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["adam", "sgd"]}}');
CREATE TABLE trial_values (
	trial_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	value FLOAT NOT NULL, 
	PRIMARY KEY (trial_value_id), 
	UNIQUE (trial_id, objective), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO trial_values VALUES(1,1,0,4.238275816566295262);
INSERT INTO trial_values VALUES(2,2,0,4.5828589663982901569);
INSERT INTO trial_values VALUES(3,3,0,22.498315547543487724);
INSERT INTO trial_values VALUES(4,4,0,25.46300622944658798);
CREATE TABLE trial_intermediate_values (
	trial_intermediate_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	step INTEGER NOT NULL, 
	intermediate_value FLOAT NOT NULL, 
	PRIMARY KEY (trial_intermediate_value_id), 
	UNIQUE (trial_id, step), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_heartbeats (
	trial_heartbeat_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	heartbeat DATETIME NOT NULL, 
	PRIMARY KEY (trial_heartbeat_id), 
	UNIQUE (trial_id), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version VALUES('v2.6.0.a');
CREATE UNIQUE INDEX ix_studies_study_name ON studies (study_name);
COMMIT;
