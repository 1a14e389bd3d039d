"""Hand-written clinical lexicon behind the synthetic notes (our own wording).

Each ``CodeEntry`` ties one billable ICD-10-CM code to the ways a clinician
writes it. ``INVENTORY`` is ordered from common to rare: the generator's
Zipf-like weights follow this order, and ``code_inventory(n)`` takes its head.

``uncoded`` lists the contexts in which a condition may be named *without*
being coded (letters: ``n`` negated, ``f`` family history, ``r`` ruled out,
``h`` hypothetical); only conditions for which such a sentence reads naturally
carry a letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["chronic", "status", "acute", "finding"]


@dataclass(frozen=True)
class CodeEntry:
    """How one code shows up in a note.

    ``kind`` decides where the coded mention goes: chronic problems in the
    history, status codes only in the problem list, acute problems drive the
    chief complaint, findings are reported with the results. ``complaints``
    are presenting symptoms (acute only) and ``meds`` are home medications;
    both are deliberately weak cues, never the code's own words.
    ``exam`` is an abnormal (system, finding) pair replacing the normal line.
    """

    code: str
    forms: tuple[str, ...]
    kind: Kind = "chronic"
    meds: tuple[str, ...] = ()
    complaints: tuple[str, ...] = ()
    uncoded: str = ""
    sex: Literal["F", "M"] | None = None
    exam: tuple[str, str] | None = None


def _e(
    code: str,
    forms: str,
    kind: Kind = "chronic",
    meds: str = "",
    complaints: str = "",
    uncoded: str = "",
    sex: Literal["F", "M"] | None = None,
    exam: tuple[str, str] | None = None,
) -> CodeEntry:
    """Build an entry from ``|``-separated strings so the table stays readable."""

    def split(value: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in value.split("|") if part.strip())

    return CodeEntry(code, split(forms), kind, split(meds), split(complaints), uncoded, sex, exam)


INVENTORY: tuple[CodeEntry, ...] = (
    _e(
        "I10",
        "hypertension|HTN|essential hypertension|high blood pressure",
        meds="lisinopril 20 mg daily|amlodipine 5 mg daily|hydrochlorothiazide 25 mg daily|losartan 50 mg daily",
        uncoded="nf",
    ),
    _e(
        "E78.5",
        "hyperlipidemia|HLD|dyslipidemia|high cholesterol",
        meds="atorvastatin 40 mg nightly|simvastatin 20 mg nightly|rosuvastatin 10 mg daily",
        uncoded="nf",
    ),
    _e(
        "E11.9",
        "type 2 diabetes|T2DM|type 2 diabetes mellitus|DM2",
        meds="metformin 1000 mg twice daily|glipizide 5 mg daily|empagliflozin 10 mg daily",
        uncoded="nf",
    ),
    _e(
        "K21.9",
        "GERD|gastroesophageal reflux disease|acid reflux",
        meds="omeprazole 20 mg daily|pantoprazole 40 mg daily|famotidine 20 mg twice daily",
        uncoded="n",
    ),
    _e("E66.9", "obesity|obese habitus", uncoded="f", exam=("General", "well-appearing, large body habitus")),
    _e(
        "F32.A",
        "depression|depressive disorder|low mood disorder",
        meds="sertraline 50 mg daily|escitalopram 10 mg daily|bupropion XL 150 mg daily",
        uncoded="nf",
    ),
    _e(
        "I25.10",
        "coronary artery disease|CAD|atherosclerotic heart disease",
        meds="aspirin 81 mg daily|clopidogrel 75 mg daily|isosorbide mononitrate 30 mg daily",
        uncoded="nf",
    ),
    _e(
        "F41.9",
        "anxiety|anxiety disorder|generalized anxiety",
        meds="buspirone 10 mg twice daily|hydroxyzine 25 mg as needed",
        uncoded="nf",
    ),
    _e(
        "E03.9",
        "hypothyroidism|hypothyroid|underactive thyroid",
        meds="levothyroxine 75 mcg daily|levothyroxine 100 mcg daily",
        uncoded="f",
    ),
    _e(
        "I48.91",
        "atrial fibrillation|AFib|a-fib",
        meds="apixaban 5 mg twice daily|diltiazem ER 180 mg daily|metoprolol succinate 50 mg daily",
        uncoded="nf",
        exam=("Cardiovascular", "irregularly irregular rhythm, no murmurs"),
    ),
    _e("N18.30", "CKD stage 3|chronic kidney disease stage 3|stage 3 CKD", uncoded="n"),
    _e(
        "I50.9",
        "heart failure|CHF|congestive heart failure",
        meds="furosemide 40 mg daily|carvedilol 12.5 mg twice daily|spironolactone 25 mg daily",
        uncoded="nfh",
        exam=("Extremities", "2+ pitting edema to the mid shins bilaterally"),
    ),
    _e(
        "J44.9",
        "COPD|chronic obstructive pulmonary disease|chronic obstructive lung disease",
        meds="tiotropium 18 mcg inhaled daily|albuterol inhaler as needed|fluticasone-salmeterol 250/50 one puff twice daily",
        uncoded="nf",
    ),
    _e(
        "N39.0",
        "UTI|urinary tract infection|urinary infection",
        kind="acute",
        meds="nitrofurantoin 100 mg twice daily",
        complaints="burning with urination|urinary frequency and urgency",
        uncoded="nrh",
    ),
    _e(
        "J18.9",
        "pneumonia|community-acquired pneumonia|CAP",
        kind="acute",
        meds="ceftriaxone 1 g IV daily|azithromycin 500 mg daily",
        complaints="productive cough and fevers|cough with yellow sputum",
        uncoded="nrh",
        exam=("Lungs", "crackles at the right base with egophony"),
    ),
    _e("D64.9", "anemia|normocytic anemia", kind="finding", uncoded="n"),
    _e(
        "M54.50",
        "low back pain|LBP|lumbago",
        kind="acute",
        meds="cyclobenzaprine 5 mg at bedtime as needed",
        complaints="aching pain in the lower back|back stiffness after lifting",
        uncoded="n",
    ),
    _e("G47.33", "obstructive sleep apnea|OSA|sleep apnea", meds="CPAP nightly", uncoded="nf"),
    _e(
        "J45.909",
        "asthma|reactive airway disease|bronchial asthma",
        meds="albuterol inhaler as needed|budesonide-formoterol 160/4.5 two puffs twice daily",
        uncoded="nf",
    ),
    _e(
        "R07.9",
        "chest pain|pain in the chest",
        kind="acute",
        complaints="sharp left-sided chest discomfort|a squeezing sensation in the chest",
        uncoded="nh",
    ),
    _e(
        "A41.9",
        "sepsis|septicemia|sepsis syndrome",
        kind="acute",
        meds="vancomycin 1 g IV every 12 hours|piperacillin-tazobactam 4.5 g IV every 8 hours",
        complaints="fevers, chills and confusion|rigors and low blood pressure",
        uncoded="nrh",
        exam=("General", "ill-appearing, diaphoretic, warm to the touch"),
    ),
    _e(
        "N17.9",
        "acute kidney injury|AKI|acute renal failure",
        kind="acute",
        complaints="decreased urine output|poor oral intake and reduced urination",
        uncoded="nrh",
    ),
    _e(
        "F17.210",
        "nicotine dependence|tobacco dependence|current smoker|cigarette smoker",
        kind="status",
        meds="nicotine patch 21 mg daily|varenicline 1 mg twice daily",
        uncoded="n",
    ),
    _e(
        "E11.65",
        "uncontrolled type 2 diabetes|type 2 diabetes with hyperglycemia|poorly controlled T2DM",
        meds="insulin glargine 20 units nightly|metformin 1000 mg twice daily|semaglutide 0.5 mg weekly",
    ),
    _e(
        "M17.0",
        "bilateral knee osteoarthritis|bilateral knee OA|degenerative joint disease of both knees",
        meds="meloxicam 7.5 mg daily|acetaminophen 650 mg every 6 hours as needed",
        uncoded="f",
    ),
    _e("E87.1", "hyponatremia|low sodium", kind="finding", uncoded="n"),
    _e("E87.6", "hypokalemia|low potassium", kind="finding", meds="potassium chloride 20 mEq daily", uncoded="n"),
    _e(
        "J44.1",
        "COPD exacerbation|acute exacerbation of COPD|AECOPD",
        kind="acute",
        meds="prednisone 40 mg daily|albuterol-ipratropium nebulizer every 4 hours",
        complaints="worsening shortness of breath and wheezing|increased sputum and breathlessness",
        uncoded="nh",
        exam=("Lungs", "diffuse expiratory wheezes with prolonged expiratory phase"),
    ),
    _e(
        "I63.9",
        "stroke|CVA|acute ischemic stroke|cerebral infarction",
        kind="acute",
        complaints="sudden right-sided weakness|slurred speech and facial droop",
        uncoded="nfrh",
        exam=("Neuro", "right facial droop and 3/5 strength in the right arm"),
    ),
    _e(
        "G43.909",
        "migraine|migraine headaches|migraines",
        meds="sumatriptan 50 mg as needed|topiramate 25 mg daily",
        uncoded="nf",
    ),
    _e("E55.9", "vitamin D deficiency|low vitamin D", meds="cholecalciferol 2000 units daily"),
    _e(
        "I50.22",
        "chronic systolic heart failure|HFrEF|heart failure with reduced ejection fraction",
        meds="sacubitril-valsartan 49/51 mg twice daily|carvedilol 25 mg twice daily|furosemide 40 mg daily",
        exam=("Extremities", "1+ pitting edema at the ankles"),
    ),
    _e(
        "Z79.01",
        "long-term anticoagulation|chronic anticoagulation",
        kind="status",
        meds="apixaban 5 mg twice daily|warfarin 5 mg daily",
    ),
    _e("Z87.891", "former smoker|ex-smoker|remote smoking history", kind="status"),
    _e(
        "E11.22",
        "diabetic nephropathy|diabetic kidney disease",
        meds="lisinopril 10 mg daily|insulin glargine 18 units nightly",
    ),
    _e("D50.9", "iron deficiency anemia|IDA", kind="finding", meds="ferrous sulfate 325 mg daily", uncoded="n"),
    _e(
        "I21.4",
        "NSTEMI|non-ST elevation myocardial infarction|non-ST-elevation MI",
        kind="acute",
        meds="heparin infusion|ticagrelor 90 mg twice daily",
        complaints="substernal chest pressure radiating to the left arm|crushing chest tightness with diaphoresis",
        uncoded="rh",
    ),
    _e(
        "N40.0",
        "BPH|benign prostatic hyperplasia|enlarged prostate",
        meds="tamsulosin 0.4 mg daily|finasteride 5 mg daily",
        uncoded="n",
        sex="M",
    ),
    _e("M10.9", "gout|gouty arthritis", meds="allopurinol 300 mg daily|colchicine 0.6 mg daily", uncoded="nf"),
    _e(
        "E11.42",
        "diabetic neuropathy|diabetic peripheral neuropathy|diabetic polyneuropathy",
        meds="gabapentin 300 mg three times daily|duloxetine 60 mg daily",
    ),
    _e(
        "Z79.4",
        "long-term insulin use|chronic insulin therapy",
        kind="status",
        meds="insulin glargine 24 units nightly|insulin lispro sliding scale with meals",
    ),
    _e(
        "I26.99",
        "pulmonary embolism|pulmonary embolus",
        kind="acute",
        meds="enoxaparin 1 mg/kg twice daily",
        complaints="pleuritic pain and sudden breathlessness|acute shortness of breath",
        uncoded="nrh",
    ),
    _e(
        "I82.409",
        "DVT|deep vein thrombosis|deep venous thrombosis",
        kind="acute",
        meds="rivaroxaban 15 mg twice daily",
        complaints="a swollen painful left calf|unilateral leg swelling",
        uncoded="nrh",
        exam=("Extremities", "left calf swelling with tenderness to palpation"),
    ),
    _e(
        "R55",
        "syncope|syncopal episode|fainting spell",
        kind="acute",
        complaints="passing out at home|a brief loss of consciousness",
        uncoded="nh",
    ),
    _e(
        "K59.00", "constipation|obstipation", meds="polyethylene glycol 17 g daily|senna 8.6 mg at bedtime", uncoded="n"
    ),
    _e(
        "L03.90",
        "cellulitis|soft tissue infection",
        kind="acute",
        meds="cephalexin 500 mg four times daily",
        complaints="a red, warm, painful area on the leg",
        uncoded="nrh",
        exam=("Skin", "erythema, warmth and tenderness over the anterior left shin"),
    ),
    _e(
        "J96.01",
        "acute hypoxic respiratory failure|acute hypoxemic respiratory failure",
        kind="acute",
        meds="supplemental oxygen by nasal cannula",
        complaints="severe breathlessness at rest",
        uncoded="nh",
    ),
    _e("E86.0", "dehydration|volume depletion", kind="finding", uncoded="nh", exam=("HEENT", "dry mucous membranes")),
    _e(
        "F10.20",
        "alcohol use disorder|alcohol dependence|AUD",
        meds="naltrexone 50 mg daily|thiamine 100 mg daily",
        uncoded="nf",
    ),
    _e("N18.4", "CKD stage 4|chronic kidney disease stage 4|stage 4 CKD", meds="sodium bicarbonate 650 mg twice daily"),
    _e("G62.9", "peripheral neuropathy|polyneuropathy", meds="gabapentin 300 mg at bedtime", uncoded="n"),
    _e(
        "I73.9",
        "peripheral vascular disease|PVD|peripheral arterial disease|PAD",
        meds="cilostazol 100 mg twice daily",
        uncoded="nf",
    ),
    _e("K57.30", "diverticulosis|colonic diverticulosis", uncoded="f"),
    _e(
        "J06.9",
        "upper respiratory infection|URI|viral URI",
        kind="acute",
        complaints="nasal congestion and a scratchy throat|runny nose and mild cough",
        uncoded="n",
    ),
    _e(
        "E87.5",
        "hyperkalemia|high potassium",
        kind="finding",
        meds="sodium zirconium cyclosilicate 10 g daily",
        uncoded="n",
    ),
    _e(
        "R42",
        "dizziness|vertigo|lightheadedness",
        kind="acute",
        complaints="feeling off balance|a spinning sensation when standing",
        uncoded="n",
    ),
    _e(
        "R51.9",
        "headache|cephalgia",
        kind="acute",
        complaints="pain across the forehead|head pain since this morning",
        uncoded="n",
    ),
    _e(
        "F33.1",
        "recurrent major depression|major depressive disorder, recurrent|recurrent MDD",
        meds="venlafaxine XR 150 mg daily|mirtazapine 15 mg at bedtime",
        uncoded="f",
    ),
    _e(
        "M81.0",
        "osteoporosis|age-related osteoporosis|postmenopausal osteoporosis",
        meds="alendronate 70 mg weekly|calcium with vitamin D twice daily",
        uncoded="f",
    ),
    _e("Z95.1", "status post CABG|s/p CABG|prior coronary artery bypass grafting", kind="status"),
    _e(
        "K92.2",
        "GI bleed|gastrointestinal hemorrhage|GI bleeding",
        kind="acute",
        meds="pantoprazole 40 mg IV twice daily",
        complaints="black tarry stools|coffee-ground emesis",
        uncoded="nrh",
    ),
    _e(
        "N18.6",
        "ESRD|end-stage renal disease|end stage kidney disease",
        meds="sevelamer 800 mg with meals|hemodialysis three times weekly",
        uncoded="f",
    ),
    _e(
        "K74.60",
        "cirrhosis|liver cirrhosis|cirrhosis of the liver",
        meds="lactulose 20 g twice daily|nadolol 20 mg daily",
        uncoded="nf",
        exam=("Abdomen", "distended with a fluid wave, nontender"),
    ),
    _e("D69.6", "thrombocytopenia|low platelets", kind="finding", uncoded="n"),
    _e(
        "C50.919",
        "breast cancer|carcinoma of the breast|breast carcinoma",
        meds="anastrozole 1 mg daily|tamoxifen 20 mg daily",
        uncoded="fr",
        sex="F",
    ),
    _e("K80.20", "cholelithiasis|gallstones", uncoded="nfr"),
    _e(
        "K57.32",
        "diverticulitis|sigmoid diverticulitis",
        kind="acute",
        meds="amoxicillin-clavulanate 875 mg twice daily",
        complaints="left lower quadrant abdominal pain",
        uncoded="nr",
        exam=("Abdomen", "tender in the left lower quadrant without rebound"),
    ),
    _e(
        "K85.90",
        "acute pancreatitis|pancreatitis",
        kind="acute",
        complaints="severe epigastric pain radiating to the back",
        uncoded="nrh",
        exam=("Abdomen", "epigastric tenderness with voluntary guarding"),
    ),
    _e("F03.90", "dementia|major neurocognitive disorder", meds="donepezil 10 mg at bedtime", uncoded="f"),
    _e(
        "G30.9",
        "Alzheimer's disease|Alzheimer disease",
        meds="memantine 10 mg twice daily|donepezil 10 mg at bedtime",
        uncoded="f",
    ),
    _e(
        "I35.0",
        "aortic stenosis|aortic valve stenosis",
        uncoded="n",
        exam=("Cardiovascular", "harsh 3/6 systolic murmur at the right upper sternal border"),
    ),
    _e(
        "I27.20",
        "pulmonary hypertension|pulmonary arterial hypertension",
        meds="sildenafil 20 mg three times daily",
        uncoded="n",
    ),
    _e(
        "J30.9",
        "allergic rhinitis|nasal allergies",
        meds="cetirizine 10 mg daily|fluticasone nasal spray daily",
        uncoded="f",
    ),
    _e("E05.90", "hyperthyroidism|overactive thyroid|thyrotoxicosis", meds="methimazole 10 mg daily", uncoded="f"),
    _e(
        "E10.9",
        "type 1 diabetes|T1DM|type 1 diabetes mellitus",
        meds="insulin pump therapy|insulin aspart with meals",
        uncoded="f",
    ),
    _e(
        "M06.9",
        "rheumatoid arthritis|inflammatory polyarthritis",
        meds="methotrexate 15 mg weekly|folic acid 1 mg daily",
        uncoded="f",
    ),
    _e("M54.2", "neck pain|cervicalgia", kind="acute", complaints="a stiff, sore neck", uncoded="n"),
    _e(
        "M54.16",
        "lumbar radiculopathy|lumbar nerve root irritation",
        meds="gabapentin 100 mg three times daily",
        uncoded="n",
    ),
    _e(
        "N20.0",
        "nephrolithiasis|kidney stone|renal calculus",
        kind="acute",
        meds="tamsulosin 0.4 mg daily",
        complaints="colicky flank pain radiating to the groin",
        uncoded="fr",
    ),
    _e("B18.2", "chronic hepatitis C|HCV infection|hepatitis C", meds="sofosbuvir-velpatasvir daily", uncoded="n"),
    _e("K76.0", "fatty liver|NAFLD|hepatic steatosis", uncoded="n"),
    _e("K58.9", "irritable bowel syndrome|IBS", meds="dicyclomine 20 mg as needed", uncoded="n"),
    _e("F43.10", "PTSD|post-traumatic stress disorder", meds="prazosin 2 mg at bedtime", uncoded="n"),
    _e("G40.909", "epilepsy|seizure disorder", meds="levetiracetam 500 mg twice daily", uncoded="nf"),
    _e("D72.829", "leukocytosis|elevated white count", kind="finding", uncoded="n"),
    _e("C61", "prostate cancer|prostate adenocarcinoma", meds="leuprolide every 3 months", uncoded="fr", sex="M"),
    _e("C34.90", "lung cancer|non-small cell lung cancer|lung carcinoma", uncoded="fr"),
    _e("C18.9", "colon cancer|colorectal cancer|colon adenocarcinoma", uncoded="fr"),
    _e("I65.29", "carotid stenosis|carotid artery stenosis", uncoded="n"),
    _e(
        "J01.90",
        "acute sinusitis|sinusitis|sinus infection",
        kind="acute",
        meds="amoxicillin 875 mg twice daily",
        complaints="facial pressure and nasal congestion",
        uncoded="n",
    ),
    _e("J02.9", "pharyngitis|acute pharyngitis", kind="acute", complaints="painful swallowing", uncoded="n"),
    _e("M79.7", "fibromyalgia|fibromyalgia syndrome", meds="duloxetine 30 mg daily|pregabalin 75 mg twice daily"),
    _e(
        "M25.561",
        "right knee pain|pain in the right knee",
        kind="acute",
        complaints="pain in the knee when climbing stairs",
        uncoded="n",
    ),
    _e(
        "K50.90",
        "Crohn's disease|Crohn disease|regional enteritis",
        meds="adalimumab 40 mg every other week",
        uncoded="f",
    ),
    _e("K51.90", "ulcerative colitis|UC", meds="mesalamine 1.2 g daily", uncoded="f"),
    _e("L40.0", "psoriasis|plaque psoriasis", meds="clobetasol ointment twice daily", uncoded="f"),
    _e("L20.9", "eczema|atopic dermatitis", meds="triamcinolone cream twice daily", uncoded="f"),
    _e("F90.9", "ADHD|attention deficit hyperactivity disorder", meds="methylphenidate ER 36 mg daily", uncoded="f"),
    _e("H26.9", "cataract|cataracts"),
    _e("H91.90", "hearing loss|hard of hearing", meds="bilateral hearing aids", uncoded="f"),
    _e(
        "G20.A1",
        "Parkinson's disease|Parkinson disease",
        meds="carbidopa-levodopa 25/100 three times daily",
        uncoded="f",
        exam=("Neuro", "resting tremor of the right hand and cogwheel rigidity"),
    ),
)

# Codes that a coder would not assign together (a more specific code absorbs
# the other, or the two contradict); the generator never pairs them, and never
# negates one while the other is coded.
EXCLUSIVE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("E11.9", "E11.65", "E11.22", "E11.42", "E10.9"),
    ("I50.9", "I50.22"),
    ("J44.9", "J44.1"),
    ("N18.30", "N18.4", "N18.6"),
    ("D64.9", "D50.9"),
    ("F32.A", "F33.1"),
    ("F03.90", "G30.9"),
    ("F17.210", "Z87.891"),
    ("E03.9", "E05.90"),
    ("E87.6", "E87.5"),
    ("K57.30", "K57.32"),
    ("K50.90", "K51.90"),
    ("E11.42", "G62.9"),
    ("R51.9", "G43.909"),
    ("R07.9", "I21.4"),
    ("M17.0", "M25.561"),
    ("E10.9", "E11.65", "Z79.4"),
    ("N17.9", "N18.6"),
)

# Comorbidity clusters a note may be built around (members may be cut by n_codes).
CLUSTERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "metabolic",
        ("I10", "E78.5", "E11.9", "E66.9", "N18.30", "E11.65", "G47.33", "E11.22", "E11.42", "Z79.4", "K76.0", "M10.9"),
    ),
    ("cardiac", ("I10", "E78.5", "I25.10", "I48.91", "I50.9", "I50.22", "Z79.01", "I21.4", "Z95.1", "I35.0", "R07.9")),
    ("respiratory", ("J44.9", "J44.1", "F17.210", "Z87.891", "J18.9", "J96.01", "J45.909", "C34.90", "I27.20")),
    ("infection", ("A41.9", "N39.0", "J18.9", "N17.9", "E86.0", "L03.90", "D72.829", "E87.1")),
    ("renal", ("I10", "N18.30", "N18.4", "N18.6", "D64.9", "E87.5", "N17.9", "E11.22")),
    ("mental_health", ("F32.A", "F41.9", "F17.210", "F10.20", "F33.1", "F43.10", "F90.9", "G47.33")),
    ("musculoskeletal", ("M54.50", "M17.0", "M10.9", "M81.0", "M54.16", "M54.2", "M79.7", "M06.9", "M25.561")),
    ("digestive", ("K21.9", "K59.00", "D50.9", "K92.2", "K57.30", "K57.32", "K80.20", "K85.90", "K58.9")),
    ("neuro", ("I63.9", "G43.909", "R55", "R42", "R51.9", "F03.90", "G30.9", "I65.29", "G40.909", "G20.A1")),
    ("thrombosis", ("I26.99", "I82.409", "Z79.01", "I48.91", "C50.919")),
    ("liver", ("K74.60", "F10.20", "D69.6", "B18.2", "K76.0", "E87.1")),
    ("endocrine", ("E03.9", "E55.9", "M81.0", "E05.90", "E10.9")),
)

# Shifts of vitals and labs away from their normal ranges, so numbers agree with the codes.
SIGN_SHIFTS: dict[str, dict[str, tuple[float, float]]] = {
    "I10": {"sbp": (142, 168), "dbp": (88, 102)},
    "A41.9": {"temp": (101.2, 103.4), "hr": (108, 132), "sbp": (82, 98), "dbp": (44, 58), "wbc": (16.0, 28.0)},
    "J18.9": {"temp": (100.6, 102.8), "spo2": (88, 93), "wbc": (12.5, 19.0)},
    "J44.1": {"spo2": (85, 91), "rr": (22, 28)},
    "J96.01": {"spo2": (78, 87), "rr": (26, 34)},
    "I48.91": {"hr": (104, 138)},
    "E66.9": {"bmi": (31.0, 44.0)},
    "E11.65": {"glucose": (260, 420)},
    "E11.9": {"glucose": (120, 175)},
    "E87.1": {"na": (121, 130)},
    "E87.6": {"k": (2.6, 3.2)},
    "E87.5": {"k": (5.6, 6.6)},
    "N17.9": {"cr": (2.1, 3.8)},
    "N18.30": {"cr": (1.4, 1.9)},
    "N18.4": {"cr": (2.4, 3.4)},
    "N18.6": {"cr": (5.5, 8.9)},
    "D64.9": {"hgb": (8.1, 10.4)},
    "D50.9": {"hgb": (7.4, 9.8)},
    "K92.2": {"hgb": (6.8, 8.6), "hr": (102, 120)},
    "D69.6": {"plt": (42, 98)},
    "D72.829": {"wbc": (13.2, 18.0)},
    "E86.0": {"hr": (100, 116)},
}

NORMAL_SIGNS: dict[str, tuple[float, float]] = {
    "temp": (97.6, 99.1),
    "hr": (62, 92),
    "sbp": (108, 134),
    "dbp": (64, 84),
    "rr": (12, 18),
    "spo2": (95, 99),
    "bmi": (21.0, 29.5),
    "na": (135, 144),
    "k": (3.6, 4.9),
    "cr": (0.7, 1.2),
    "wbc": (4.5, 10.5),
    "hgb": (12.0, 15.8),
    "plt": (160, 380),
    "glucose": (78, 118),
}

# Sentence templates: ``{x}`` is the mention; other slots come from the patient.
VISIT_REASONS = (
    "routine follow-up",
    "a scheduled follow-up visit",
    "medication review",
    "an annual physical examination",
    "follow-up of chronic conditions",
    "a medication refill",
)
ACUTE_SENTENCES = (
    "{He} was found to have {x}.",
    "Evaluation in the emergency department confirmed {x}.",
    "{He} is being admitted for management of {x}.",
    "The workup was consistent with {x}.",
    "Today {he} was diagnosed with {x}.",
)
FINDING_SENTENCES = ("Labs were notable for {x}.", "Admission labs showed {x}.", "Routine bloodwork revealed {x}.")
HPI_FILLERS = (
    "{He} reports taking {his} medications as prescribed.",
    "{He} has been eating and drinking normally.",
    "{He} manages {his} own finances and medications.",
    "Sleep has been fair.",
    "{He} was last seen in clinic about six months ago.",
    "{He} walks about twenty minutes most days.",
    "Energy level is at baseline per {his} family.",
    "{He} brought a list of {his} home medications.",
    "No recent travel or sick contacts.",
    "{He} denies recent hospitalizations.",
    "Review of systems is otherwise negative.",
    "{He} is accompanied by a family member today.",
    "Weight has been stable over the past year.",
    "{He} has had no falls at home.",
)
EXAM_NEGATED_SENTENCES = ("No clinical signs of {x}.", "Exam is not suggestive of {x}.")
NEGATED_SENTENCES = (
    "{He} denies {x}.",
    "No evidence of {x}.",
    "Negative for {x}.",
    "No signs of {x}.",
    "{He} has no known {x}.",
    "No prior {x}.",
)
RULED_OUT_SENTENCES = (
    "Of note, {x} was ruled out during this evaluation.",
    "Workup was reassuring and {x} was ruled out.",
    "Given normal results, {x} has been ruled out.",
    "We ruled out {x}.",
)
HYPOTHETICAL_SENTENCES = (
    "Return precautions reviewed, including for {x}.",
    "Advised to seek care promptly if {x} develops.",
    "If {x} develops, {he} should return to the emergency department.",
    "We discussed warning signs of {x}.",
)
FAMILY_SENTENCES = (
    "{Relative} with {x}.",
    "{Relative} had {x}.",
    "{Relative} was diagnosed with {x} at age {n}.",
    "{Relative} is being treated for {x}.",
)
RELATIVES = {
    "F": ("Mother", "Sister", "Maternal grandmother", "Paternal aunt", "Daughter"),
    "M": ("Father", "Brother", "Paternal grandfather", "Maternal uncle", "Son"),
}
FAMILY_NONE = (
    "Noncontributory.",
    "Unremarkable per patient report.",
    "Parents lived into their nineties; no known hereditary illness.",
    "Unknown; the patient was adopted.",
)
SOCIAL_HISTORY = (  # one sentence from each group
    (
        "Lives with {his} spouse.",
        "Lives alone in an apartment.",
        "Lives with {his} daughter's family.",
        "Resides in an assisted living facility.",
    ),
    (
        "Retired schoolteacher.",
        "Works as a bus driver.",
        "Works in construction.",
        "Works as an accountant.",
        "Retired from the postal service.",
        "Works part-time in retail.",
    ),
    (
        "No illicit drug use.",
        "Independent in activities of daily living.",
        "Has two adult children nearby.",
        "Enjoys gardening and walking {his} dog.",
    ),
)
ALLERGIES = (
    "No known drug allergies.",
    "Penicillin (hives).",
    "Sulfa drugs (rash).",
    "Codeine (nausea).",
    "Iodinated contrast (itching).",
)
GENERAL_MEDS = (
    "multivitamin daily",
    "acetaminophen 500 mg as needed",
    "melatonin 3 mg at bedtime",
    "docusate 100 mg twice daily",
)
NORMAL_EXAM: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("General", ("alert, oriented and in no acute distress", "comfortable and well-appearing")),
    ("HEENT", ("normocephalic, atraumatic, moist mucous membranes", "oropharynx clear, pupils equal and reactive")),
    ("Neck", ("supple, no lymphadenopathy", "no jugular venous distension")),
    ("Cardiovascular", ("regular rate and rhythm, no murmurs", "normal S1 and S2, no rubs or gallops")),
    ("Lungs", ("clear to auscultation bilaterally", "good air movement without wheezes or crackles")),
    ("Abdomen", ("soft, nontender, nondistended", "soft with normal bowel sounds")),
    ("Extremities", ("no edema, warm and well perfused", "no clubbing, cyanosis or edema")),
    ("Skin", ("warm and dry, no lesions", "intact without ulcers")),
    ("Neuro", ("no focal deficits", "cranial nerves intact, strength 5/5 throughout")),
)
ACUTE_PLANS = (
    "Supportive care and close monitoring.",
    "Repeat labs in the morning.",
    "Reassess in 24 hours.",
    "Discussed the diagnosis and plan with the patient.",
)
CHRONIC_PLANS = (
    "Stable; continue current management.",
    "Discussed lifestyle measures.",
    "Recheck at the next visit.",
    "Labs in three months.",
    "Well controlled at present.",
)
FINDING_PLANS = (
    "Repeat level in the morning.",
    "Trend with daily labs.",
    "Recheck with the next blood draw.",
    "Likely multifactorial; monitor.",
)
STATUS_PLANS = ("Noted for risk assessment.", "No changes today.", "Reviewed with the patient.")
CLINIC_CLOSINGS = (
    "Follow up with primary care in {n} weeks.",
    "Return to clinic in {n} weeks.",
    "Next visit in {n} weeks, sooner if needed.",
)
HOSPITAL_CLOSINGS = (
    "Anticipate discharge in {n} days.",
    "Continue inpatient care; reassess daily.",
    "Discharge planning with case management; expected stay {n} days.",
)
